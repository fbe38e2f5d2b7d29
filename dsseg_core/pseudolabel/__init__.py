"""Pseudo-labelling from LiDAR + camera drives (Drive&Segment): ground, range image, LiDAR
object proposals, segment descriptors, clustering, dataset writer and evaluation."""
