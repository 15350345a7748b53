"""Sources: each collector watches one part of a loop's repository and publishes events."""
