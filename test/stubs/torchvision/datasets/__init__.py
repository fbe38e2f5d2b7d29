from .._placeholder import placeholder

_NAMES = (
    'CIFAR10 CIFAR100 MNIST KMNIST FashionMNIST ImageFolder Places365 INaturalist QMNIST ImageNet'
).split()
for _name in _NAMES:
    globals()[_name] = placeholder(f'datasets.{_name}')
