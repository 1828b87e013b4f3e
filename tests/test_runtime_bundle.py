"""Bundle verification: checksums before the session, manifest checks, path escapes, archives."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from bundle_factory import TinyBundle, edit_manifest, fresh, make_archive, tiny  # noqa: F401 (fixtures)

import kgedge.runtime.model as model_module
from kgedge.runtime import BundleError, EdgeModel


@pytest.fixture()
def no_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if an onnxruntime session is created: verification must come first."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a session was created before the bundle was verified")

    monkeypatch.setattr(model_module, "create_session", refuse)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.onnx", "entities.txt", "known_tails.npy", "entity_types.npy",
                                  "known_keys.npy", "known_offsets.npy", "relations.txt"])
def test_a_flipped_byte_is_caught_before_the_session(fresh: TinyBundle, no_session: None, name: str) -> None:
    """In memory (model.onnx, entity_types.npy) or memory-mapped (the others), every file is checked."""
    flip_byte(fresh.path / name, (fresh.path / name).stat().st_size // 2)
    with pytest.raises(BundleError, match=rf"{name}: sha256 differs from the manifest"):
        EdgeModel.load(fresh.path)


@pytest.mark.parametrize("name", ["known_tails.npy", "entities.txt"])
def test_a_grown_or_truncated_mapped_file_is_named(fresh: TinyBundle, no_session: None, name: str) -> None:
    target = fresh.path / name
    good = target.read_bytes()
    for data in (good[:-8], good + b"\0" * 4096):
        target.write_bytes(data)
        with pytest.raises(BundleError, match=rf"{name}: {len(data):,} bytes, the manifest says {len(good):,}"):
            EdgeModel.load(fresh.path)


def test_a_truncated_or_missing_file_is_named(fresh: TinyBundle, no_session: None) -> None:
    target = fresh.path / "relations.txt"
    target.write_bytes(target.read_bytes()[:-3])
    with pytest.raises(BundleError, match=r"relations\.txt: \d+ bytes, the manifest says"):
        EdgeModel.load(fresh.path)
    target.unlink()
    with pytest.raises(BundleError, match=r"relations\.txt: listed in the manifest but missing"):
        EdgeModel.load(fresh.path)


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/passwd", "sub/entities.txt", "..", ""])
def test_manifest_paths_escaping_the_bundle_are_refused(fresh: TinyBundle, no_session: None, name: str) -> None:
    (fresh.path.parent / "outside.txt").write_text("x")
    entry = {"sha256": "0" * 64, "bytes": 1}
    edit_manifest(fresh.path, lambda m: m["files"].__setitem__(name, entry))
    with pytest.raises(BundleError, match="is not a plain file name inside the bundle"):
        EdgeModel.load(fresh.path)


def test_symlinked_files_are_refused(fresh: TinyBundle, no_session: None) -> None:
    real = fresh.path.parent / "entities_real.txt"
    os.replace(fresh.path / "entities.txt", real)
    os.symlink(real, fresh.path / "entities.txt")
    with pytest.raises(BundleError, match=r"entities\.txt: a symlink"):
        EdgeModel.load(fresh.path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: m.__setitem__("format_version", 2), "format_version 2 is not supported by this runtime"),
    (lambda m: m.__setitem__("format", "other"), "this is not a kgedge bundle"),
    (lambda m: m.pop("session"), r"missing keys \['session'\]"),
    (lambda m: m["files"].pop("known_keys.npy"), r"does not cover \['known_keys.npy'\]"),
    (lambda m: m.__setitem__("num_entities", 25), r"entities\.txt: 26 lines, the manifest says 25"),
    (lambda m: m["session"].__setitem__("graph_optimization_level", "max"), "graph_optimization_level='max'"),
    (lambda m: m.__setitem__("types", ["user", "user"]), "non-empty list of unique names"),
    (lambda m: m["files"]["model.onnx"].__setitem__("sha256", "xyz"), "needs a hex 'sha256'"),
])
def test_bad_manifests_are_refused_with_a_clear_message(fresh: TinyBundle, change, message: str) -> None:  # noqa: ANN001
    edit_manifest(fresh.path, change)
    with pytest.raises(BundleError, match=message):
        EdgeModel.load(fresh.path)


def test_an_oversized_manifest_is_refused_before_it_is_parsed(fresh: TinyBundle, no_session: None) -> None:
    edit_manifest(fresh.path, lambda m: m.__setitem__("padding", "x" * (2 << 20)))
    with pytest.raises(BundleError, match=r"manifest\.json: 2,09\d,\d{3} bytes, more than a manifest can be"):
        EdgeModel.load(fresh.path)


def test_inconsistent_arrays_are_refused(fresh: TinyBundle) -> None:
    np.save(fresh.path / "entity_types.npy", np.full(26, 7, dtype=np.int32))
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match=r"entity_types\.npy: values outside \[0, 4\)"):
        EdgeModel.load(fresh.path)


def test_relation_names_that_clash_with_inverse_names_are_refused(fresh: TinyBundle) -> None:
    (fresh.path / "relations.txt").write_text("bought\nbought^-1\nanswers\n")
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match=r"\['bought\^-1'\] would clash with the inverse names"):
        EdgeModel.load(fresh.path)


def test_a_pickled_npy_is_refused(fresh: TinyBundle) -> None:
    np.save(fresh.path / "known_tails.npy", np.array([object()], dtype=object), allow_pickle=True)
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match=r"known_tails\.npy: not a readable \.npy without pickles"):
        EdgeModel.load(fresh.path)


def test_a_graph_with_other_inputs_is_refused(fresh: TinyBundle) -> None:
    import onnx

    graph = onnx.load(fresh.path / "model.onnx")
    graph.graph.input[4].name = "excluded"
    for node in graph.graph.node:
        node.input[:] = ["excluded" if x == "exclude" else x for x in node.input]
    onnx.save(graph, fresh.path / "model.onnx")
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match="the bundle contract needs"):
        EdgeModel.load(fresh.path)


@pytest.mark.parametrize(("suffix", "top_dir"), [(".tar.gz", True), (".tar", False), (".tgz", True)])
def test_archives_load_and_answer_like_the_directory(tiny: TinyBundle, tmp_path: Path, suffix: str, top_dir: bool) -> None:
    archive = make_archive(tiny.path, tmp_path / f"bundle{suffix}", top_dir=top_dir)
    packed, plain = EdgeModel.load(archive), EdgeModel.load(tiny.path)
    assert packed.answer("user_3", "bought", k=8) == plain.answer("user_3", "bought", k=8)
    np.testing.assert_array_equal(packed.score_all(np.arange(5), np.arange(5)), plain.score_all(np.arange(5), np.arange(5)))


def test_archive_seen_items_persist_beside_the_archive(fresh: TinyBundle, tmp_path: Path) -> None:
    archive = make_archive(fresh.path, tmp_path / "b.tar.gz")
    model = EdgeModel.load(archive)
    top = model.recommend("user_1", k=1)[0][0]
    assert model.add_seen("user_1", top) == 1
    assert model.seen_path == tmp_path / "b.tar.gz.seen_overlay.tsv" and model.seen_path.is_file()
    assert top not in [n for n, _ in EdgeModel.load(archive).recommend("user_1", k=5)]


def test_a_tampered_archive_names_the_file_inside_it(fresh: TinyBundle, tmp_path: Path) -> None:
    flip_byte(fresh.path / "model.onnx", 100)
    archive = make_archive(fresh.path, tmp_path / "b.tar.gz")
    with pytest.raises(BundleError, match=r"b\.tar\.gz!/model\.onnx: sha256 differs"):
        EdgeModel.load(archive)


def _tar_with(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize(("name", "kind", "message"), [
    ("../evil.txt", tarfile.REGTYPE, "points outside the archive"),
    ("/tmp/evil.txt", tarfile.REGTYPE, "points outside the archive"),
    ("bundle/link", tarfile.SYMTYPE, "is a link"),
    ("bundle/hard", tarfile.LNKTYPE, "is a link"),
    ("bundle/fifo", tarfile.FIFOTYPE, "not a plain file or folder"),
])
def test_unsafe_archive_members_are_refused(tmp_path: Path, name: str, kind: bytes, message: str) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    member.size = 1 if kind == tarfile.REGTYPE else 0
    archive = _tar_with(tmp_path / "evil.tar.gz", member, b"x" if kind == tarfile.REGTYPE else b"")
    with pytest.raises(BundleError, match=message):
        EdgeModel.load(archive)
    assert not (tmp_path.parent / "evil.txt").exists()


def test_a_broken_archive_or_other_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "b.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(BundleError, match="cannot extract"):
        EdgeModel.load(tmp_path / "b.tar.gz")
    (tmp_path / "model.zip").write_bytes(b"PK")
    with pytest.raises(BundleError, match=r"not a bundle directory nor a \.tar/\.tar\.gz"):
        EdgeModel.load(tmp_path / "model.zip")
    empty = tarfile.TarInfo("readme.txt")
    empty.size = 1
    with pytest.raises(BundleError, match="no manifest.json"):
        EdgeModel.load(_tar_with(tmp_path / "e.tar", empty, b"x"))


def test_the_overlay_is_never_checksummed(fresh: TinyBundle) -> None:
    (fresh.path / "seen_overlay.tsv").write_text("user_0\tbought\tproduct_1\n")
    edit_manifest(fresh.path, lambda m: m["files"].__setitem__("seen_overlay.tsv", {"sha256": "0" * 64, "bytes": 1}))
    with pytest.raises(BundleError, match="must not be checksummed"):
        EdgeModel.load(fresh.path)


def test_factory_manifest_round_trip(fresh: TinyBundle) -> None:
    """A re-written manifest with fresh checksums loads: the tests above fail for their reason only."""
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    assert EdgeModel.load(fresh.path).num_entities == 26
