"""Built-in dataset adapters, registered lazily: importing this package imports no adapter module.

Add a built-in by writing ``adapters/<module>.py`` with a :class:`pigbench.adapter.DatasetAdapter`
subclass and one line below. Third-party adapters use the ``pigbench.adapters`` entry point group.
"""

from pigbench.registry import adapters

for _name, _target in {
    "demo": "pigbench.adapters.demo:DemoDataset",
    "pigbench": "pigbench.adapters.pigbench_format:PIGBenchFormat",
    "pickapic": "pigbench.adapters.pickapic:PickAPic",
    "pickapic-v1": "pigbench.adapters.pickapic:PickAPicV1",
    "pickapic-lup": "pigbench.adapters.learn_user_pref:LearnUserPref",
    "pip": "pigbench.adapters.pip:PIP",
    "pasta": "pigbench.adapters.pasta:PASTA",
}.items():
    adapters.register_lazy(_name, _target)
