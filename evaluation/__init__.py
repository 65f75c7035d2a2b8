"""Full-ranking evaluation under the leave-one-out protocol, its metrics, and the tests across seeds."""
