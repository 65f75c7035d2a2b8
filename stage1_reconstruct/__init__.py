"""stage1_reconstruct."""
