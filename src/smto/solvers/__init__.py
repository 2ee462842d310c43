"""Small inner problems of the methods (min-norm points, Nash bargaining), solved robustly."""


class SolverWarning(RuntimeWarning):
    """An inner solver did not converge; the step used its best iterate and counted the failure."""
