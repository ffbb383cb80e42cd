"""The testing toolbox shipped to users (mixin, pytest helpers, sample tasks, strategies)."""
