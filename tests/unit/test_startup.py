import subprocess
import sys

# pyarrow imports pandas on its first numpy conversion and on to_numpy; after prepare_process both work
# without it, and pandas stays out of the process.
_PROBE = """
import sys
from data_prep.startup import prepare_process
prepare_process()
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
array = pa.array(np.arange(4, dtype=np.int64))
print(pc.add(array, 1).to_numpy().tolist(), pa.array(["a", None]).to_numpy(zero_copy_only=False).tolist())
print("pandas" in sys.modules)
import pandas
"""


def test_a_prepared_process_converts_numpy_without_loading_pandas():
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines() == ["[1, 2, 3, 4] ['a', None]", "False"]
    assert result.returncode == 1
    assert "ImportError: dlrm-prep does not load pandas" in result.stderr
