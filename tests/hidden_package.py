"""The opening of every script that must run where this package cannot be imported.

The package is installed (editable) in the test environment, so an import hook hides it; a
folder or Hub repository loaded after this must carry all its own code.
"""

HIDE_PACKAGE = r"""
import importlib.abc, sys

class HidePackage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pipeline_mnist_ddim" or name.startswith("pipeline_mnist_ddim."):
            raise ImportError(f"{name} is hidden: the folder must load from its own code")
        return None

sys.meta_path.insert(0, HidePackage())
try:
    import pipeline_mnist_ddim
except ImportError:
    pass
else:
    sys.exit("the package is still importable: the check would prove nothing")
"""
