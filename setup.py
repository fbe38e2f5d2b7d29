"""dsseg: an ament_python package that also installs with plain pip."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'dsseg'

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(include=['dsseg_core', 'dsseg_core.*', 'dsseg_ros', 'dsseg_ros.*']),
    package_data={'dsseg_core': ['resources/*']},
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.launch.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.rviz')
         + glob('config/*.xml')),
    ],
    python_requires='>=3.10',
    install_requires=[
        'numpy>=1.24',
        'pydantic>=2.5',
        'pyyaml>=6',
        'rosbags>=0.10',
        'transforms3d>=0.4',
        'tqdm>=4.60',
        'pillow>=10',
        'scipy>=1.10',
        'scikit-learn>=1.3',
        'safetensors>=0.4',
        # compiled kernels (range image, ground, proposals, z-buffer, label transfer);
        # dsseg falls back to its numpy paths where numba has no wheel
        "numba>=0.59; platform_python_implementation == 'CPython'",
    ],
    extras_require={
        # torch itself is pinned by requirements/ci.txt (CPU wheel); timm and open_clip are
        # installed with --no-deps on CPU machines, where no torchvision wheel exists.
        'ml': ['torch>=2.1', 'timm>=1.0', 'onnx>=1.15', 'onnxruntime>=1.17'],
        'open3d': ['open3d-cpu>=0.18'],
        # ROS 2 Kilted wheels for machines without a system ROS install. On a car, rclpy and
        # the message packages come from /opt/ros instead: never install this extra there.
        'ros': [
            'ros-rclpy', 'ros-rmw-fastrtps-cpp', 'ros-sensor-msgs', 'ros-std-msgs',
            'ros-geometry-msgs', 'ros-visualization-msgs', 'ros-builtin-interfaces',
            'ros-diagnostic-msgs', 'ros-rosgraph-msgs', 'ros-ament-index-python',
            'ros-ament-package',
        ],
        'test': ['pytest>=7', 'ruff>=0.5'],
    },
    zip_safe=True,
    maintainer='dsseg maintainers',
    maintainer_email='dsseg@example.org',
    description='Label-free semantic segmentation from camera + LiDAR drives, for ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [
            'dsseg = dsseg_core.cli:main',
            'segmenter = dsseg_ros.segmenter_node:main',
            'cloud_labeller = dsseg_ros.cloud_labeller_node:main',
            'bag_player = dsseg_ros.bag_player_node:main',
        ],
    },
)
