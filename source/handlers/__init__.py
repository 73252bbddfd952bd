"""What every handler shares (task context, input policy, task paths, params) and the utility handlers."""
