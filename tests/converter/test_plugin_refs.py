from __future__ import annotations

import subprocess
import sys

import passes.plugins  # noqa: F401  (registers the PluginSpecs with their references)
from surgery.plugins import plugin_specs


def test_every_plugin_spec_has_a_reference():
    missing = [op for op, spec in plugin_specs().items() if spec.reference is None]
    assert not missing, f"plugin specs without a numpy reference in passes/plugins.py: {missing}"


def test_norm_plugins_are_registered():
    assert {"SurgeryLayerNorm", "SurgeryRMSNorm", "SurgeryGroupNorm", "CustomSkipLayerNormPluginDynamic"} <= set(plugin_specs())


def test_the_plugin_registry_is_filled_by_explicit_import_only():
    code = ("from surgery.plugins import plugin_specs; before = len(plugin_specs()); import passes.plugins; "
            "print(before, sorted(plugin_specs()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split(" ", 1)
    assert out[0] == "0" and "SurgeryGelu" in out[1] and "SurgeryAttention" in out[1]
