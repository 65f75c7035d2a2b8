"""stage2_augment."""
