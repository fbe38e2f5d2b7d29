"""dsseg_ros: thin ROS 2 nodes that convert messages and call dsseg_core."""
