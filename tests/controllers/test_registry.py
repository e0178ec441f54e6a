"""The one registry helper behind the controller, agent and task registries."""
import pytest

from controllers.agents import AGENTS, agent_names
from controllers.base import CONTROLLERS, make_controller, registered_controllers
from controllers.registry import Registry
from worldmodels.config import replace_path, tiny_config
from worldmodels.tasks import TASKS, make_task, task_names


def test_register_get_names_and_the_one_line_error():
    reg = Registry("widget", flag="--widget.name")

    @reg.register("alpha")
    def alpha():
        return 1

    assert reg.register("beta")(len) is len          # the decorator returns the factory unchanged
    assert reg.names() == ["alpha", "beta"] and "alpha" in reg and "gamma" not in reg
    assert reg.get("alpha") is alpha
    with pytest.raises(ValueError) as e:
        reg.get("alpah")
    assert str(e.value) == "--widget.name: unknown widget 'alpah' (known: alpha, beta); did you mean alpha?"
    with pytest.raises(ValueError, match=r"^unknown widget 'zzz' \(known: \)$"):
        Registry("widget").get("zzz")


def test_the_three_registries_use_it():
    """Every built-in is registered through the public decorators (register_controller,
    register_agent, register_task) into the shared helper."""
    assert {"ppo", "egrl", "greedy"} <= set(registered_controllers()) == set(CONTROLLERS.names())
    assert {"ppo", "cmaes", "egrl", "planner", "random"} == set(agent_names()) == set(AGENTS.names())
    assert {"GraphRewrite-v0", "MemoryPlacement-v0"} <= set(task_names()) and task_names() == TASKS.names()
    with pytest.raises(ValueError, match=r"^unknown controller 'ppx' \(known: .*\); did you mean ppo"):
        make_controller("ppx")
    with pytest.raises(ValueError, match=r"^--env.name: unknown environment 'Nope-v0'"):
        make_task(replace_path(tiny_config(), {"env.name": "Nope-v0"}))
