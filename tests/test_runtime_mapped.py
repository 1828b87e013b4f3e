"""Bundles read without copies: int32 and int64 seen indexes used as mapped, names decoded from
``entities.txt``'s bytes (found by bisection when sorted, through a dict otherwise), checks done
chunk by chunk, pages dropped, and no reference to the model bytes kept after the session."""

from __future__ import annotations

import bisect

import mmap
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from bundle_factory import TinyBundle, edit_manifest, fresh, make_archive, tiny  # noqa: F401 (fixtures)
from hypothesis import given, settings
from hypothesis import strategies as st

import kgedge.runtime.bundle as bundle_module
from kgedge.runtime import Bundle, BundleError, EdgeModel, SessionSettings, UnknownNameError, read_bundle
from kgedge.runtime.vocab import PackedNames, Vocabulary, suggest

INDEX = ("known_keys.npy", "known_offsets.npy", "known_tails.npy")


def rewrite_index(bundle: Path, dtype: str) -> None:
    """Save the seen index's three arrays as ``dtype`` and re-checksum the bundle."""
    for name in INDEX:
        np.save(bundle / name, np.load(bundle / name, allow_pickle=False).astype(dtype), allow_pickle=False)
    edit_manifest(bundle, lambda m: None, rehash=True)


def every_seen(model: EdgeModel) -> list[np.ndarray]:
    heads = np.repeat(np.arange(model.num_entities), 2 * model.num_relations)
    relations = np.tile(np.arange(2 * model.num_relations), model.num_entities)
    return model._seen.lookup(heads, relations)


def load(bundle: Bundle) -> EdgeModel:
    """``EdgeModel`` of a bundle already read (``EdgeModel.load`` without the reading)."""
    return EdgeModel(bundle, SessionSettings.from_manifest(bundle.manifest["session"], "test"))


def parse_names(data: bytes, count: int) -> PackedNames:
    return bundle_module._names({"names.txt": data}, "names.txt", Path("b"), count)


# -- the seen index: uint16 / int32 (new exports) and int64 (older bundles), used as mapped ----------

@pytest.mark.parametrize("dtype", ["uint16", "int32", "int64"])
def test_the_index_is_used_as_mapped_in_its_own_dtype(fresh: TinyBundle, tiny: TinyBundle, dtype: str) -> None:
    rewrite_index(fresh.path, dtype)
    bundle = read_bundle(fresh.path)
    for array in (bundle.known.keys, bundle.known.offsets, bundle.known.tails):
        assert array.dtype == dtype  # no int64 copy of a narrow file, no conversion of an int64 one
        assert not array.flags.writeable and not array.flags.owndata  # a view of the read-only map
    model, reference = load(bundle), EdgeModel.load(tiny.path)
    for got, want in zip(every_seen(model), every_seen(reference), strict=True):
        np.testing.assert_array_equal(got, want)
        assert got.dtype == np.int64
    users = [e for e in tiny.entities if e.startswith("user_")]
    assert [model.recommend(u, k=5) for u in users] == [reference.recommend(u, k=5) for u in users]


@pytest.mark.parametrize("dtype", ["int16", ">i4", "uint64"])
def test_other_integer_dtypes_become_an_int64_copy(fresh: TinyBundle, tiny: TinyBundle, dtype: str) -> None:
    rewrite_index(fresh.path, dtype)
    model = EdgeModel.load(fresh.path)
    assert model._seen.known.tails.dtype == np.int64
    for got, want in zip(every_seen(model), every_seen(EdgeModel.load(tiny.path)), strict=True):
        np.testing.assert_array_equal(got, want)


def test_unsigned_keys_out_of_order_are_refused(fresh: TinyBundle) -> None:
    """The order check compares values: a difference of unsigned keys would wrap around and pass."""
    keys = np.load(fresh.path / "known_keys.npy").astype(np.uint64)
    keys[[0, 1]] = keys[[1, 0]]
    np.save(fresh.path / "known_keys.npy", keys, allow_pickle=False)
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match=r"known_keys\.npy: keys are not strictly increasing"):
        EdgeModel.load(fresh.path)


def test_exported_bundles_write_the_index_and_types_in_the_narrowest_dtype(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from kgedge.data.generate import ShopConfig, generate_shop_kg, write_shop_kg
    from kgedge.data.kg import load_kg
    from kgedge.export.bundle import _write_vocab
    from kgedge.train.checkpoint import Checkpoint, Vocabulary as CheckpointVocabulary

    write_shop_kg(generate_shop_kg(ShopConfig(num_entities=200, seed=3)), tmp_path / "data")
    kg = load_kg(tmp_path / "data")
    assert kg.num_entities <= 256 < kg.num_entities * 2 * kg.num_relations <= 65536
    vocab_only = Checkpoint(model=None, vocab=CheckpointVocabulary.of(kg), metadata={})  # type: ignore[arg-type]
    _write_vocab(tmp_path, vocab_only, kg)
    # tails < 200 fit a byte; keys (head * 2R + relation) need two; offsets run to the tail count
    offsets_dtype = np.uint8 if len(kg.known_train.tails) < 256 else np.uint16
    for name, want, dtype in zip(INDEX, (kg.known_train.keys, kg.known_train.offsets, kg.known_train.tails),
                                 (np.uint16, offsets_dtype, np.uint8), strict=True):
        saved = np.load(tmp_path / name, allow_pickle=False)
        assert saved.dtype == dtype, name
        np.testing.assert_array_equal(saved, want)
    types = np.load(tmp_path / "entity_types.npy", allow_pickle=False)
    assert types.dtype == np.uint8
    np.testing.assert_array_equal(types, kg.entity_types)
    names = (tmp_path / "entities.txt").read_bytes()
    assert parse_names(names, kg.num_entities).ordered  # the data loader sorts: ids are found by bisection


# -- checks chunk by chunk -----------------------------------------------------------------------

@pytest.fixture()
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 16 bytes (two int64): every check crosses many chunk boundaries."""
    monkeypatch.setattr(bundle_module, "CHUNK_BYTES", 16)
    monkeypatch.setattr(bundle_module, "_NAME_CHUNK_BYTES", 8)


def test_chunked_reading_loads_what_a_whole_read_loads(fresh: TinyBundle, tiny: TinyBundle, tiny_chunks: None) -> None:
    model, reference = EdgeModel.load(fresh.path), EdgeModel.load(tiny.path)
    assert model.entities == reference.entities
    for got, want in zip(every_seen(model), every_seen(reference), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", INDEX + ("entities.txt",))
def test_a_flipped_last_byte_is_caught_in_the_last_chunk(fresh: TinyBundle, tiny_chunks: None, name: str) -> None:
    path = fresh.path / name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{name}: sha256 differs from the manifest"):
        EdgeModel.load(fresh.path)


@pytest.mark.parametrize(("name", "message"), [("known_keys.npy", "keys are not strictly increasing"),
                                               ("known_offsets.npy", "offsets do not index known_tails.npy")])
def test_disorder_across_a_chunk_boundary_is_caught(fresh: TinyBundle, tiny_chunks: None, name: str,
                                                   message: str) -> None:
    array = np.load(fresh.path / name)
    array[2] = array[1] - 1  # elements 1 and 2 sit in different 16-byte chunks
    np.save(fresh.path / name, array, allow_pickle=False)
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    with pytest.raises(BundleError, match=rf"{name}: {message}"):
        EdgeModel.load(fresh.path)


# -- names: the scan of entities.txt against the plain decode-and-split it replaces -----------------

def _reference_names(data: bytes, count: int) -> tuple[str, ...] | str:
    """What ``read_bundle`` did before the names were mapped: the names, or the error's reason."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        return "not UTF-8"
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) != count:
        return f"{len(lines)} lines, the manifest says {count}"
    if not all(lines) or len(set(lines)) != len(lines):
        return "names must be non-empty and unique"
    return tuple(lines)


_line = st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)), max_size=4)
_files = st.one_of(
    st.lists(_line, max_size=12).map(lambda xs: "\n".join(xs).encode()),
    st.lists(_line, max_size=12, unique=True).map(lambda xs: "".join(f"{x}\n" for x in sorted(xs)).encode()),
    st.lists(_line, max_size=12, unique=True).map(lambda xs: "".join(f"{x}\n" for x in xs).encode()),
    st.binary(max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(data=_files, extra=st.sampled_from([0, 0, 0, 1, -1]), chunk=st.sampled_from([1, 3, 8, 1 << 20]))
def test_names_scan_equals_decode_and_split(data: bytes, extra: int, chunk: int) -> None:
    try:
        lines = data.decode("utf-8").split("\n")
        count = max(0, len(lines) - (lines[-1] == "") + extra)
    except UnicodeDecodeError:
        count = 1
    want = _reference_names(data, count)
    with mock.patch.object(bundle_module, "_NAME_CHUNK_BYTES", chunk):
        try:
            got: tuple[str, ...] | str = tuple(names := parse_names(data, count))
        except BundleError as err:
            got = str(err).removeprefix("b/names.txt: ").split(";")[0]
    assert got == want
    if isinstance(want, tuple):
        assert names.ordered == all(a.encode() < b.encode() for a, b in zip(want, want[1:]))
        assert [names[i] for i in range(len(want))] == list(want) and len(names) == len(want)


# -- Vocabulary: bisection over sorted names against the dict -------------------------------------

def _both(names: list[str]) -> tuple[Vocabulary, Vocabulary]:
    data = "".join(f"{n}\n" for n in names).encode()
    packed = parse_names(data, len(names))
    assert packed.ordered
    bisecting, by_dict = Vocabulary("entity", packed), Vocabulary("entity", tuple(names))
    assert bisecting._ids is None and isinstance(bisecting.names, PackedNames) and isinstance(by_dict.names, tuple)
    return bisecting, by_dict


def _outcome(vocab: Vocabulary, name: object) -> object:
    try:
        return vocab.id(name)  # type: ignore[arg-type]
    except UnknownNameError as err:
        return ("unknown", str(err), err.suggestions)


_names_sets = st.sets(st.text(st.characters(blacklist_characters="\n", blacklist_categories=("Cs",)),
                              min_size=1, max_size=6), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(names=_names_sets, probes=st.lists(st.text(max_size=7), max_size=8))
def test_bisection_and_dict_give_the_same_ids_errors_and_suggestions(names: set[str], probes: list[str]) -> None:
    ordered = sorted(names, key=lambda x: x.encode())
    bisecting, by_dict = _both(ordered)
    assert [bisecting.id(n) for n in ordered] == list(range(len(ordered)))
    for probe in [*ordered, *probes, *(n[:-1] + "~" for n in ordered), "\ud800", ""]:  # a lone surrogate too
        assert (probe in bisecting) == (probe in by_dict)
        assert _outcome(bisecting, probe) == _outcome(by_dict, probe)
    for other in (3, None, b"user", ["a"]):
        assert other not in bisecting and other not in by_dict


def test_a_large_vocabulary_suggests_from_the_sorted_neighbourhood() -> None:
    """Past 50,000 names, sorted names are compared only within the first character's range, and of
    that only the 5,000 around the probe's sorted position: a bounded pool, where the typos of ids
    (a changed or extra character late in the name) find their name."""
    stems = ("user", "product", "item", "Ωmega", "ürün", "商品", "🙂emoji", "zeta")
    names = sorted({f"{stem}_{i}" for stem in stems for i in range(6_500)}, key=lambda x: x.encode())
    bisecting, by_dict = _both(names)
    assert len(names) > 50_000
    for probe, expected in (("user_17a", "user_17"), ("prodcut_4", "product_4"), ("ürün_17x", "ürün_17"),
                            ("商品_12x", "商品_12"), ("user_6499x", "user_6499")):
        assert _outcome(bisecting, probe)[0] == "unknown"
        assert suggest(probe, bisecting.names)[0] == suggest(probe, list(names))[0] == expected
    for probe in ("Zeta_5", "\ud800x", "q"):  # no name shares the first character: nothing to suggest
        assert _outcome(bisecting, probe) == _outcome(by_dict, probe)
    umlaut = [i for i, name in enumerate(names) if name.startswith("ü")]
    assert bisecting.names.starting_with("ü") == range(umlaut[0], umlaut[-1] + 1)
    users = bisecting.names.starting_with("user_")
    assert len(users) == 6_500 and all(bisecting.names[i].startswith("user_") for i in (users[0], users[-1]))
    encoded = [n.encode() for n in names]
    assert bisecting.names.position("user_17a") == bisect.bisect_left(encoded, b"user_17a") > names.index("user_17")


def test_unsorted_names_fall_back_to_a_dict(tiny: TinyBundle) -> None:
    bundle = read_bundle(tiny.path)
    assert not bundle.entities.ordered  # the factory lists entities by type, not by name
    model = load(bundle)
    assert isinstance(model._entities.names, tuple) and model._entities._ids is not None
    assert [model.entity_id(e) for e in tiny.entities] == list(range(len(tiny.entities)))


def test_names_of_a_sorted_bundle_work_as_before(fresh: TinyBundle, tiny: TinyBundle) -> None:
    """``.names`` (indexing, slices, iteration, ``in``) of bisected names, through the model and the seen overlay."""
    renamed = [f"e{i:02d}_{name}" for i, name in enumerate(tiny.entities)]  # sorted by name = by id
    (fresh.path / "entities.txt").write_text("".join(f"{n}\n" for n in renamed), encoding="utf-8")
    edit_manifest(fresh.path, lambda m: None, rehash=True)
    model = EdgeModel.load(fresh.path)
    names = model._entities.names
    assert isinstance(names, PackedNames) and names.ordered and model._entities._ids is None
    assert list(names) == renamed and model.entities == renamed and len(names) == len(renamed)
    assert names[0] == renamed[0] and names[-1] == renamed[-1] and names[3:7] == tuple(renamed[3:7])
    assert renamed[5] in names and "nope" not in names and names.index(renamed[9]) == 9
    assert [model.entity_id(n) for n in renamed] == list(range(len(renamed)))
    with pytest.raises(UnknownNameError, match="did you mean"):
        model.entity_id(renamed[4][:-1] + "x")
    user = renamed[tiny.entities.index("user_2")]
    item = next(n for n, _ in model.recommend(user, k=1))
    assert model.add_seen(user, [item]) == 1 and item in model.seen(user)
    assert item in EdgeModel.load(fresh.path).seen(user)  # the overlay holds names, read back by bisection


# -- what stays in memory -------------------------------------------------------------------------

def test_the_session_keeps_no_reference_to_the_model_bytes(tiny: TinyBundle) -> None:
    bundle = read_bundle(tiny.path)
    model = load(bundle)
    before = sys.getrefcount(bundle.model)
    assert getattr(model._graph.session, "_model_bytes", None) is None
    del model
    after = sys.getrefcount(bundle.model)  # (not inside the assert: its rewriting holds references)
    assert after == before  # the model held nothing either


def test_an_archive_answers_from_maps_of_its_deleted_temporary_files(tiny: TinyBundle, tmp_path: Path) -> None:
    packed, plain = EdgeModel.load(make_archive(tiny.path, tmp_path / "b.tar.gz")), EdgeModel.load(tiny.path)
    for got, want in zip(every_seen(packed), every_seen(plain), strict=True):
        np.testing.assert_array_equal(got, want)
    users = [e for e in tiny.entities if e.startswith("user_")]
    assert [packed.recommend(u, k=5) for u in users] == [plain.recommend(u, k=5) for u in users]


def _mapping_rss_kib(address: int) -> int:
    """Resident KiB of this process's mapping that starts at ``address`` (Linux ``/proc/self/smaps``)."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and ":" not in fields[0]:
            inside = int(fields[0].split("-")[0], 16) == address
        elif inside and fields[0] == "Rss:":
            return int(fields[1])
    raise AssertionError(f"no mapping at {address:#x}")


@pytest.mark.skipif(not Path("/proc/self/smaps").is_file() or not hasattr(mmap, "MADV_DONTNEED"),
                    reason="needs Linux /proc/self/smaps and madvise")
def test_drop_pages_leaves_a_read_map_out_of_resident_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    content = np.arange(4 << 20, dtype=np.int32)  # 16 MiB
    path.write_bytes(content.tobytes())
    with open(path, "rb") as handle:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    view = np.frombuffer(data, dtype=np.int32)
    address = view.ctypes.data
    assert int(view.sum(dtype=np.int64)) == int(content.sum(dtype=np.int64))  # every page touched
    assert _mapping_rss_kib(address) >= 15 * 1024
    bundle_module.drop_pages(data, 0, len(data))
    assert _mapping_rss_kib(address) <= 256
    np.testing.assert_array_equal(view[::4096], content[::4096])  # still readable: read again from the file
