"""C: controllers behind one interface (see :mod:`controllers.base`), chosen by name."""
from controllers.base import Controller, TimeStep, make_controller, register_controller, registered_controllers
from controllers import baselines, cmaes, egrl, mcts, planner, ppo  # noqa: F401  (register built-ins)

__all__ = ["Controller", "TimeStep", "make_controller", "register_controller", "registered_controllers"]
