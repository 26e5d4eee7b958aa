"""Built-in dataset adapters, registered lazily: importing this package imports no adapter module.

Add a built-in by writing ``adapters/<module>.py`` with a :class:`pigbench.adapter.DatasetAdapter`
subclass and one line below. Third-party adapters use the ``pigbench.adapters`` entry point group.
"""

from pigbench.registry import adapters

for _name, _target in {
    "demo": "pigbench.adapters.demo:DemoDataset",
}.items():
    adapters.register_lazy(_name, _target)
