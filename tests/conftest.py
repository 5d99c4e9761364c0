"""Test-wide settings."""

import torch

# The test models are tiny: one thread is faster than two, and it keeps OpenMP from spinning against
# whatever else runs on a 2-core machine.
torch.set_num_threads(1)


def pytest_report_header(config):
    """Say which int8 path the ONNX Runtime tests exercise: results differ between instruction sets."""
    from distiq.quant.target import cpu_info

    info = cpu_info()
    return f"int8 path: {info['target']} ({info['model']})"


def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line(pytest_report_header(None))
