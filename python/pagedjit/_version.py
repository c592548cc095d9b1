__version__ = "0.12.0"  # the project version (CMakeLists.txt); tests/test_cpu.py checks they agree
