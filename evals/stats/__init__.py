"""Statistics for comparisons: bootstrap intervals, rate/score tests, sample sizes, SRM, sequential tests."""
