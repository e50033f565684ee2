"""Re-ID data sets: real on-disk layouts, the synthetic default, sampling and augmentation."""
