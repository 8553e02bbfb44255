"""The SCDPO method: sampling solutions, step-controlled continuations, steps, and preference pairs."""
