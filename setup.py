from setuptools import Extension, find_packages, setup

# kbnn.runtime's LiteRT delegate: plain C, so a C compiler is all it needs. It is loaded
# with ctypes / LiteRT's load_delegate, not imported. optional: without a compiler kbnn
# installs without it (export and the stock runtime do not need it) and
# kbnn.runtime.library_path() says how to build it. -ffp-contract=off keeps each float
# multiply and add rounded as the stock graph rounds them.
_DELEGATE_SOURCES = ["delegate.c", "bitkernels.c", "bitconv.c", "threadpool.c", "shapeeval.c"]
KBNN_DELEGATE = Extension(
    "kbnn.runtime._kbnn_delegate",
    sources=[f"kbnn/runtime/csrc/{name}" for name in _DELEGATE_SOURCES],
    include_dirs=["kbnn/runtime/csrc"],
    depends=[f"kbnn/runtime/csrc/{name}" for name in
             ("tflite_abi.h", "delegate.h", "bitkernels.h", "bitconv.h", "threadpool.h",
              "shapeeval.h")],
    extra_compile_args=["-std=c11", "-O2", "-ffp-contract=off"],
    libraries=["pthread"],
    optional=True,
)

# kbnn.quantizer_ops: TensorFlow ops for the sign quantizers' training step, written
# against TensorFlow's C kernel API (declared in kbnn/csrc/tf_kernel_abi.h), so a C
# compiler is all it needs too; loaded with tf.load_op_library. optional: without it the
# quantizers run TensorFlow's own ops, with bit-identical results.
KBNN_QUANTIZER_OPS = Extension(
    "kbnn._quantizer_ops",
    sources=["kbnn/csrc/quantizer_ops.c"],
    depends=["kbnn/csrc/tf_kernel_abi.h"],
    extra_compile_args=["-std=c11", "-O3", "-ffp-contract=off"],
    optional=True,
)

setup(
    name="kbnn",
    version="0.1.0",
    description="Binary neural networks on Keras 3: Larq-style quantized layers, "
    "a Fashion-MNIST model zoo, and a bit-packed TFLite exporter for stock LiteRT.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # The released models ship inside the package as kbnn/zoo/saved_models/, built from
    # the repository's saved_models/ (their one copy); kbnn.zoo.weights looks there.
    packages=find_packages(include=["kbnn", "kbnn.*"]) + ["kbnn.zoo.saved_models"],
    package_dir={"kbnn.zoo.saved_models": "saved_models"},
    package_data={"kbnn": ["py.typed"], "kbnn.zoo.saved_models": ["*.keras", "*.json"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.18",  # Keras 3 and numpy 2
        "keras>=3.0",
        "numpy>=2.0",
        "tensorflow-datasets",
        "importlib_resources",  # tensorflow-datasets imports it; declares it for Python < 3.9
        "matplotlib",
    ],
    extras_require={
        # tests/test_install.py builds the wheel offline (pip --no-build-isolation)
        "test": ["pytest", "ai-edge-litert", "setuptools", "wheel"],
        "export": ["ai-edge-litert"],
    },
    ext_modules=[KBNN_DELEGATE, KBNN_QUANTIZER_OPS],
    license="Apache-2.0",
)
