from .._placeholder import placeholder
from . import functional  # noqa: F401
from .functional import InterpolationMode  # noqa: F401

_NAMES = (
    'CenterCrop ColorJitter Compose Grayscale Lambda Normalize Pad RandomApply RandomChoice '
    'RandomCrop RandomGrayscale RandomHorizontalFlip RandomResizedCrop RandomVerticalFlip Resize '
    'ToPILImage ToTensor'
).split()
for _name in _NAMES:
    globals()[_name] = placeholder(f'transforms.{_name}')
