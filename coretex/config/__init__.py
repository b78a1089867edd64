"""The config service: base files + pack overlays + tenant overrides -> one effective config.

    service = ConfigService(connect(settings), settings)
    service.load_base(settings.config_dir)                  # idempotent
    service.set("pack", "acme", {"pools": {...}}, author="installer", message="install acme 1.2")
    snapshot = service.effective(tenant="t1")               # Snapshot(version, sha256, config)
    ConfigWatcher(client, settings, on_change=rebuild_router).start()

Documents merge as RFC 7386 merge patches, base -> packs (install order) -> tenant, and every
merge is validated against the section schemas before anything is committed.
"""

from coretex.config.documents import SCOPES, ConfigDocument, DocumentSet
from coretex.config.errors import (
    ConfigConflictError,
    ConfigInvalidError,
    ConfigNotLoadedError,
    PolicyBundleInvalidError,
)
from coretex.config.merge import merge_layers, merge_patch
from coretex.config.policy_bundles import PolicyBundle, PolicyBundleChange
from coretex.config.sections import SECTION_SCHEMAS, SECTIONS, validate_config
from coretex.config.service import ConfigService, ConfigServiceOptions
from coretex.config.snapshot import HistoryEntry, Snapshot, canonical_json
from coretex.config.watcher import ConfigWatcher

__all__ = [
    "SCOPES",
    "SECTIONS",
    "SECTION_SCHEMAS",
    "ConfigConflictError",
    "ConfigDocument",
    "ConfigInvalidError",
    "ConfigNotLoadedError",
    "ConfigService",
    "ConfigServiceOptions",
    "ConfigWatcher",
    "DocumentSet",
    "HistoryEntry",
    "PolicyBundle",
    "PolicyBundleChange",
    "PolicyBundleInvalidError",
    "Snapshot",
    "canonical_json",
    "merge_layers",
    "merge_patch",
    "validate_config",
]
