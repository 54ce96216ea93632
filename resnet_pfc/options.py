"""The option mechanism of :mod:`ufm.options`, under the name the training configs import it by
(:class:`resnet_pfc.config.TrainConfig`, :class:`resnet_pfc.depth_config.DepthConfig`)."""

from ufm.options import (
    add_options,
    attributes_doc,
    bounds_text,
    check_fields,
    check_value,
    documented,
    option,
    option_from,
    option_meta,
    option_spec,
    options_from_args,
)

__all__ = [
    "option",
    "option_meta",
    "option_from",
    "option_spec",
    "add_options",
    "options_from_args",
    "check_fields",
    "check_value",
    "bounds_text",
    "documented",
    "attributes_doc",
]
