"""Export: ONNX top-k graphs with integer tables, export profiles, validated bundles."""

from kgedge.export.bundle import ExportResult, export_bundle
from kgedge.export.profile import ExportProfile, ProfileError, available_profiles, resolve_profile
from kgedge.export.validate import ExportValidationError

__all__ = [
    "ExportProfile",
    "ExportResult",
    "ExportValidationError",
    "ProfileError",
    "available_profiles",
    "export_bundle",
    "resolve_profile",
]
