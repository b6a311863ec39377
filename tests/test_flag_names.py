"""One name per concept across the scripts: the output folder is --output everywhere, the old
names still work, and test.py describes itself for every method."""
import pytest

import predict
import test as test_script
import train
import visualize

PARSERS = {"train.py": lambda: train.get_args_parser(), "test.py": test_script.get_args_parser,
           "predict.py": predict.get_args_parser, "visualize.py": visualize.get_args_parser}
OLD_NAMES = {"test.py": "--out-dir", "predict.py": "--out", "visualize.py": "--out"}
POSITIONAL = {"train.py": [], "test.py": ["ck.pth"], "predict.py": ["ck.pth", "x.jpg"], "visualize.py": ["ck.pth", "x.jpg"]}


@pytest.mark.parametrize("script", PARSERS)
def test_output_folder_is_output_everywhere_and_old_names_are_aliases(script):
    parser = PARSERS[script]()
    assert parser.parse_args([*POSITIONAL[script], "--output", "somewhere"]).output == "somewhere"
    if script in OLD_NAMES:
        assert parser.parse_args([*POSITIONAL[script], OLD_NAMES[script], "elsewhere"]).output == "elsewhere"


def test_test_py_help_is_not_about_mek_only():
    text = test_script.get_args_parser().format_help()
    assert "MEK" not in text and "any method" in text
