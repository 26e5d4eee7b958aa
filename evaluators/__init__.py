"""Built-in evaluators, registered lazily: importing this package imports no evaluator module.

Add a built-in by writing ``evaluators/<module>.py`` with a :class:`pigbench.evaluator.Evaluator`
subclass (heavy imports such as torch inside functions) and one line below. Third-party
evaluators use the ``pigbench.evaluators`` entry point group instead.
"""

from pigbench.registry import evaluators

for _name, _target in {
    "random": "pigbench.evaluators.random_choice:RandomChoice",
    "colorfulness": "pigbench.evaluators.colorfulness:Colorfulness",
    "color-reference": "pigbench.evaluators.color_reference:ColorReference",
    "ssim-reference": "pigbench.evaluators.ssim_reference:SSIMReference",
}.items():
    evaluators.register_lazy(_name, _target)
