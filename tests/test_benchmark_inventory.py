"""The benchmark's device inventory: a bad file is one INVALID_ARGUMENT naming the device and field."""

import pytest

from exporter.benchmark.inventory import load_inventory
from exporter.core.errors import Code, ExportError

GOOD = """
[devices.pi4]
host = "192.0.2.10"
user = "pi"
key = "keys/pi4"
runtime = "tflite_runtime"
threads = 4
"""


def test_a_device_with_paths_relative_to_the_file(tmp_path):
    inventory = tmp_path / "devices.toml"
    inventory.write_text(GOOD)
    (device,) = load_inventory(inventory)
    assert (device.name, device.host, device.port, device.user, device.threads) == ("pi4", "192.0.2.10", 22, "pi", 4)
    assert device.key == tmp_path / "keys" / "pi4" and device.runtime == "tflite_runtime"


@pytest.mark.parametrize(
    "text, says",
    [
        ("[devices.pi4\n", "is not TOML"),
        ("[other]\nx = 1\n", "no [devices.<name>] table"),
        (GOOD.replace('host = "192.0.2.10"\n', ""), "device 'pi4': host: Field required"),
        (GOOD.replace('"tflite_runtime"', '"onnxruntime"'), "device 'pi4': runtime: String should match"),
        (GOOD + "password = 'x'\n", "device 'pi4': password: Extra inputs are not permitted"),
        (GOOD.replace("threads = 4", "threads = 0"), "device 'pi4': threads: Input should be greater than"),
    ],
)
def test_bad_inventories_name_what_is_wrong(tmp_path, text, says):
    inventory = tmp_path / "devices.toml"
    inventory.write_text(text)
    with pytest.raises(ExportError) as raised:
        load_inventory(inventory)
    assert raised.value.code is Code.INVALID_ARGUMENT and says in raised.value.message, raised.value.message
