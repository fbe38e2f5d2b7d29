"""The test configuration keeps ROS 2 discovery on this machine, for this process and children."""

import os
import subprocess
import sys


def test_discovery_is_localhost_and_domain_is_set() -> None:
    assert os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    domain = int(os.environ['ROS_DOMAIN_ID'])
    assert 0 <= domain <= 101


def test_subprocesses_inherit_the_rule() -> None:
    out = subprocess.run(
        [sys.executable, '-c',
         'import os; e = os.environ; '
         'print(e["ROS_AUTOMATIC_DISCOVERY_RANGE"], e["ROS_DOMAIN_ID"])'],
        check=True, capture_output=True, text=True,
    ).stdout.split()
    assert out == ['LOCALHOST', os.environ['ROS_DOMAIN_ID']]
