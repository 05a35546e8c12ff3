"""--help explains every option of every command and shows its default."""

import argparse

import pytest

from shardwise.cli.main import build_parser


def _subcommands():
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_every_option_has_help_and_shows_its_default(name):
    sub = _subcommands()[name]
    text = sub.format_help()
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"shardwise {name} {action.option_strings or action.dest} has no help text"
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert f"(default: {action.default})" in " ".join(text.split()), (name, action.option_strings)


def test_train_help_says_steps_is_the_total():
    text = " ".join(_subcommands()["train"].format_help().split())
    assert "total optimizer steps" in text and "(default: 600)" in text
