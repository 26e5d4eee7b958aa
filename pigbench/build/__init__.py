"""Building PIGBench: the toolkit behind ``pigbench build``.

The stages run in order over one build workspace (:mod:`pigbench.build.workspace`), each
resumable, each adding files the next one reads::

    prompts   select N PartiPrompts "Simple Detail" prompts, stratified by category
    expand    four concrete variants per prompt from a chat model (validated JSON)
    render    four SDXL images per set, fixed seed per image, provenance per image
    review    a local page where the curator keeps or drops each four-image set
    annotate  a web app where annotators rank the four images of their assigned sets
    export    instances, rankings, images and a datasheet in the PIGBench format

Nothing here imports torch, diffusers or transformers at module level.
"""
