"""Hidden-state probes: training (layer x pooling sweep), artifacts, ONNX heads, scoring, comparison.

Import from the submodules (``monitor.probe.scorer``, ``monitor.probe.train`` ...); this package
module stays light so that importing it does not pull in torch.
"""

__all__: list[str] = []
