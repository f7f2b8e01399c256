"""The model zoo: classic architectures whose every 1×1 conv is a ``Conv1x1``.

>>> import pointwise.models as pm
>>> pm.names("resnet[0-9]*")
['resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152']
>>> model = pm.create("resnet18", num_classes=10)
>>> pm.create("resnt50")  # doctest: +ELLIPSIS
Traceback (most recent call last):
    ...
ValueError: unknown model 'resnt50'; did you mean 'resnet50', ...? (pointwise.models.names() ...)

One module per family (``nin``, ``googlenet``, ``resnet``, ``mobilenet``, ``squeezenet``);
each ends with small ``@register_model`` entry points that call one private builder.
Every model takes ``num_classes`` and ``in_channels``. Where torchvision has the
architecture, submodule names match its, so its state_dicts load key for key
(``Conv1x1`` has ``nn.Conv2d``'s keys). This package imports torch; ``import pointwise``
does not.
"""

from pointwise.models import digits, googlenet, mobilenet, nin, resnet, squeezenet
from pointwise.models.loader import load_model
from pointwise.models.registry import Registry, create, names, register_model

__all__ = ["Registry", "create", "digits", "googlenet", "load_model", "mobilenet", "names", "nin",
           "register_model", "resnet", "squeezenet"]
