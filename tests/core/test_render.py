"""Mermaid and DOT output, checked structurally: nodes, edges and their kinds, colours."""

from __future__ import annotations

import re
from typing import Any

from questionnaire import NO_EMAIL, QUESTIONNAIRE

from triggers_core import parse_configuration
from triggers_core.testing.simulate import simulate
from triggers_core.tools.render import Edge, GroupNode, edges, group_nodes, to_dot, to_mermaid

TASKS = parse_configuration(QUESTIONNAIRE)
TRIGGERS = {
    "startSession",
    "observationsReceived",
    "pageReceived",
    "sessionAbandoned",
    "sessionFinalized",
    "reminderDue",
}
EXPECTED_EDGES = {
    ("startSession", "t_createApplicant", "after"),
    ("observationsReceived", "t_createApplicant", "after"),
    ("startSession", "t_processPage", "after"),
    ("pageReceived", "t_processPage", "andEvery"),
    ("sessionAbandoned", "t_processPage", "unless"),
    ("t_createApplicant", "t_computeScore", "cascade"),
    ("sessionFinalized", "t_computeScore", "after"),
    ("t_computeScore", "t_sendReport", "cascade"),
    ("startSession", "t_sendReminder", "after"),
    ("reminderDue", "t_sendReminder", "after"),
    ("sessionFinalized", "t_sendReminder", "unless"),
}
MERMAID_ARROWS = {
    "-->": "after",
    "-->|andEvery|": "andEvery",
    "-.->|unless|": "unless",
    "==>": "cascade",
}
DOT_STYLES = {
    "style=solid": "after",
    'style=solid, label="andEvery"': "andEvery",
    'style=dotted, arrowhead=tee, label="unless"': "unless",
    "style=bold, penwidth=2": "cascade",
}


def parse_mermaid(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes, kinds, found, classes = {}, {}, set(), {}
    for line in lines[1:]:
        if m := re.fullmatch(r'    (tr\d+)\(\["(.*)"\]\)', line):
            nodes[m[1]], kinds[m[1]] = m[2], "trigger"
        elif m := re.fullmatch(r'    (tk\d+)\["(.*)"\]', line):
            nodes[m[1]], kinds[m[1]] = m[2], "task"
        elif m := re.fullmatch(r"    (t[rk]\d+) (\S+) (tk\d+)", line):
            found.add((m[1], m[3], MERMAID_ARROWS[m[2]]))
        elif m := re.fullmatch(r"    class (\S+) (\w+)", line):
            for node in m[1].split(","):
                classes[node] = m[2]
        else:
            assert re.fullmatch(r"    classDef \w+ fill:#\w+,stroke:#\w+", line), line
    return {"nodes": nodes, "kinds": kinds, "edges": found, "classes": classes}


def parse_dot(text: str) -> dict[str, Any]:
    lines = text.splitlines()
    assert lines[:2] == ["digraph triggers {", "    rankdir=LR;"]
    assert lines[-1] == "}"
    nodes, shapes, found, fills = {}, {}, set(), {}
    for line in lines[2:-1]:
        if m := re.fullmatch(
            r'    (t[rk]\d+) \[label="((?:[^"\\]|\\.)*)", shape=(\w+)(.*)\];', line
        ):
            nodes[m[1]] = m[2].replace('\\"', '"').replace("\\\\", "\\")
            shapes[m[1]] = m[3]
            if fill := re.search(r'fillcolor="(#\w+)"', m[4]):
                fills[m[1]] = fill[1]
        elif m := re.fullmatch(r"    (t[rk]\d+) -> (tk\d+) \[(.*)\];", line):
            found.add((m[1], m[2], DOT_STYLES[m[3]]))
        else:
            raise AssertionError(line)
    return {"nodes": nodes, "shapes": shapes, "edges": found, "fills": fills}


def named(graph: dict[str, Any]) -> set[tuple[str, str, str]]:
    nodes = graph["nodes"]
    return {(nodes[s].split(" (")[0], nodes[t].split(" (")[0], k) for s, t, k in graph["edges"]}


def test_edges_of_every_kind() -> None:
    assert {(e.source, e.target, e.kind) for e in edges(TASKS)} == EXPECTED_EDGES
    every = parse_configuration(
        {
            "t_a": {"after": ["x"], "run": "r"},
            "t_b": {"after": ["x"], "andEvery": "t_a", "run": "r"},
        }
    )
    assert Edge("t_a", "t_b", "cascade", and_every=True) in edges(every)
    assert "    tk0 ==>|andEvery| tk1" in to_mermaid(every)
    assert 'tk0 -> tk1 [style=bold, penwidth=2, label="andEvery"];' in to_dot(every)


def test_mermaid_structure() -> None:
    graph = parse_mermaid(to_mermaid(TASKS))
    assert {graph["nodes"][n] for n, k in graph["kinds"].items() if k == "trigger"} == TRIGGERS
    assert {graph["nodes"][n] for n, k in graph["kinds"].items() if k == "task"} == set(TASKS)
    assert named(graph) == EXPECTED_EDGES
    assert graph["classes"] == {}


def test_dot_structure() -> None:
    graph = parse_dot(to_dot(TASKS))
    assert {graph["nodes"][n] for n, s in graph["shapes"].items() if s == "ellipse"} == TRIGGERS
    assert {graph["nodes"][n] for n, s in graph["shapes"].items() if s == "box"} == set(TASKS)
    assert named(graph) == EXPECTED_EDGES
    assert graph["fills"] == {}


def test_coloured_by_a_session() -> None:
    state = simulate(
        QUESTIONNAIRE,
        ["startSession", "observationsReceived", "sessionFinalized"],
        results=NO_EMAIL,
    )
    mermaid = parse_mermaid(to_mermaid(TASKS, instances=state.instances.values()))
    by_name = {mermaid["nodes"][n].split(" (")[0]: n for n in mermaid["nodes"]}
    assert {task: mermaid["classes"].get(by_name[task]) for task in TASKS} == {
        "t_createApplicant": "finished",
        "t_processPage": "unstarted",
        "t_computeScore": "finished",
        "t_sendReport": "failed",
        "t_sendReminder": "abandoned",
    }
    assert mermaid["nodes"][by_name["t_sendReport"]] == "t_sendReport (1 failed)"
    dot = parse_dot(to_dot(TASKS, instances=state.instances.values()))
    fills = {dot["nodes"][n].split(" (")[0]: f for n, f in dot["fills"].items()}
    assert fills["t_sendReport"] == "#f8d7da"
    assert len(fills) == 5


def test_a_task_without_instances_says_so() -> None:
    state = simulate(QUESTIONNAIRE, ["startSession"])
    text = to_mermaid(TASKS, instances=state.instances.values())
    assert '["t_computeScore (no instance)"]' in text


def test_any_name_renders() -> None:
    odd = 'a "quoted" <b> #1 \\ back'
    tasks = parse_configuration({"t_a": {"after": [odd], "run": "r"}})
    mermaid = to_mermaid(tasks)
    assert '(["a #quot;quoted#quot; #lt;b#gt; #35;1 \\ back"])' in mermaid
    assert parse_dot(to_dot(tasks))["nodes"]["tr0"] == odd


GROUPED = parse_configuration(
    {
        "t_a": {"after": ["x"], "run": "r"},
        "t_b": {
            "after": ["start", {"anyOf": ["t_a", "y", {"atLeast": 2, "of": ["p", "q", "r"]}]}],
            "unless": [{"anyOf": ["cancel", "t_a"]}],
            "run": "r",
        },
    }
)


def test_groups_are_nodes_between_their_members_and_their_task() -> None:
    assert group_nodes(GROUPED) == [
        GroupNode("t_b.after[1]", "t_b", "after", "", "any of"),
        GroupNode("t_b.after[1].anyOf[2]", "t_b", "after", "t_b.after[1]", "2 of"),
        GroupNode("t_b.unless[0]", "t_b", "unless", "", "any of"),
    ]
    assert Edge("t_a", "t_b", "cascade", group="t_b.after[1]") in edges(GROUPED)
    assert Edge("t_a", "t_b", "unless", group="t_b.unless[0]") in edges(GROUPED)
    assert Edge("start", "t_b", "after") in edges(GROUPED)
    assert to_mermaid(GROUPED) == (
        "flowchart LR\n"
        '    tr0(["cancel"])\n'
        '    tr1(["p"])\n'
        '    tr2(["q"])\n'
        '    tr3(["r"])\n'
        '    tr4(["start"])\n'
        '    tr5(["x"])\n'
        '    tr6(["y"])\n'
        '    tk0["t_a"]\n'
        '    tk1["t_b"]\n'
        '    gp0{{"any of"}}\n'
        '    gp1{{"2 of"}}\n'
        '    gp2{{"any of"}}\n'
        "    tr0 -.-> gp2\n"
        "    tr1 --> gp1\n"
        "    tr2 --> gp1\n"
        "    tr3 --> gp1\n"
        "    tr4 --> tk1\n"
        "    tk0 ==> gp0\n"
        "    tk0 -.-> gp2\n"
        "    tr5 --> tk0\n"
        "    tr6 --> gp0\n"
        "    gp0 --> tk1\n"
        "    gp1 --> gp0\n"
        "    gp2 -.->|unless| tk1\n"
    )
    dot = to_dot(GROUPED).splitlines()
    assert dot[11:14] == [
        '    gp0 [label="any of", shape=hexagon];',
        '    gp1 [label="2 of", shape=hexagon];',
        '    gp2 [label="any of", shape=hexagon];',
    ]
    assert dot[14:] == [
        "    tr0 -> gp2 [style=dotted];",
        "    tr1 -> gp1 [style=solid];",
        "    tr2 -> gp1 [style=solid];",
        "    tr3 -> gp1 [style=solid];",
        "    tr4 -> tk1 [style=solid];",
        "    tk0 -> gp0 [style=bold, penwidth=2];",
        "    tk0 -> gp2 [style=dotted];",
        "    tr5 -> tk0 [style=solid];",
        "    tr6 -> gp0 [style=solid];",
        "    gp0 -> tk1 [style=solid];",
        "    gp1 -> gp0 [style=solid];",
        '    gp2 -> tk1 [style=dotted, arrowhead=tee, label="unless"];',
        "}",
    ]


def test_plain_configurations_draw_no_group_node() -> None:
    assert group_nodes(TASKS) == []
    assert all(not e.group for e in edges(TASKS))
    assert "gp" not in to_mermaid(TASKS) + to_dot(TASKS)
