from __future__ import annotations

import passes  # noqa: F401  (registers passes, and with them their PluginSpecs)
from converter.plugins.refs import get_reference
from surgery.plugins import plugin_specs


def test_every_plugin_spec_has_a_reference():
    missing = [op for op in plugin_specs() if get_reference(op) is None]
    assert not missing, f"plugin specs without a numpy reference in converter/plugins/refs.py: {missing}"


def test_norm_plugins_are_registered():
    assert {"SurgeryLayerNorm", "SurgeryRMSNorm", "SurgeryGroupNorm", "CustomSkipLayerNormPluginDynamic"} <= set(plugin_specs())
