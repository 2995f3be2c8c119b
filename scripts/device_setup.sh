# Sourced by the device scripts (gpu_check_device.sh, train_gpu_device.sh) on a lent GPU machine
# without network: installs the carried wheels in .whl/ (ase, matscipy, jax-md; docs/gpu.md)
# next to the machine's own CUDA jax, keeps XLA from preallocating the GPU, prints the GPU.
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:.
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE:-false}
export PYTHONUNBUFFERED=1
nvidia-smi -L || true
