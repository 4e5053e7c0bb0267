"""How `MNISTDDIMPipeline` lives in a folder: loading through the installed class, saving code and
text components so that any diffusers and transformers 4.x/5.x load them, and the Hub upload.

Hub remote code beside ``pipeline_mnist_ddim.py`` (which imports it relatively; diffusers copies
relatively imported files along), so it imports only diffusers, transformers and huggingface_hub.
"""

import importlib
import inspect
import json
import os
import shutil
from typing import Callable, Union

from diffusers import ModelMixin, SchedulerMixin
from diffusers.utils.constants import DIFFUSERS_DYNAMIC_MODULE_NAME
from diffusers.utils.dynamic_modules_utils import get_relative_import_files
from diffusers.utils.hub_utils import load_or_create_model_card, populate_model_card


def _update_json(path: str, update: Callable[[dict], None]) -> None:
    with open(path) as f:
        content = json.load(f)
    update(content)
    with open(path, "w") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")


class PipelineFolderMixin:
    """Folder behaviour for a `DiffusionPipeline` whose classes travel as code files (put it before the pipeline
    base class, so that its methods come first)."""

    @classmethod
    def from_pipe(cls, pipeline, **kwargs):
        # diffusers carries a model over only if its exact class is in `__init__`'s annotation, and
        # the UNet is a subclass that this file cannot import (it loads from `unet/`): pass it on.
        if getattr(pipeline, "unet", None) is not None:
            kwargs.setdefault("unet", pipeline.unet)
        return super().from_pipe(pipeline, **kwargs)

    @classmethod
    def load_config(cls, pretrained_model_name_or_path, *args, **kwargs):
        """The folder's index, read so that `from_pretrained` through this class uses the installed code.

        `save_pretrained` records this class and the UNet's as `[module, class]` beside copies of their
        source files, for `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`. Someone who
        calls `MNISTDDIMPipeline.from_pretrained` already has the code: diffusers would still import the
        folder's copies (and ask for `trust_remote_code`), so each entry whose class is defined next to this
        module is pointed at that installed module instead, and the folder's `.py` files are never imported.
        A class that was itself loaded as remote code keeps diffusers' rules.
        """
        loaded = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        package = cls.__module__.rpartition(".")[0]
        if "_class_name" not in config or not package or package.split(".")[0] == DIFFUSERS_DYNAMIC_MODULE_NAME:
            return loaded
        if isinstance(config["_class_name"], (list, tuple)):
            # a plain name: diffusers then builds `cls` itself instead of importing the folder's pipeline file
            config["_class_name"] = cls.__name__
        for name, entry in config.items():
            if name.startswith("_") or not isinstance(entry, (list, tuple)) or len(entry) != 2:
                continue
            module_name, class_name = entry
            if not isinstance(module_name, str) or not module_name.isidentifier() or not isinstance(class_name, str):
                continue
            if module_name in ("diffusers", "transformers"):
                continue
            try:  # only this package's own modules: a name from the folder never reaches anything else
                module = importlib.import_module(f"{package}.{module_name}")
            except ImportError:
                continue
            component_class = getattr(module, class_name, None)
            if not isinstance(component_class, type) or not issubclass(component_class, (ModelMixin, SchedulerMixin)):
                continue
            # diffusers resolves a full module path from `sys.modules` (the import above put it there), and
            # picks the loading method by the base class of that name in the module: our module subclasses
            # `UNet2DConditionModel` and never names `ModelMixin` itself, so name it there.
            for base in (ModelMixin, SchedulerMixin):
                if issubclass(component_class, base) and getattr(module, base.__name__, None) is not base:
                    setattr(module, base.__name__, base)
            config[name] = [module.__name__, class_name]
        return loaded

    def save_pretrained(self, save_directory: Union[str, os.PathLike], push_to_hub: bool = False, **kwargs):
        """Saves a folder that loads with `trust_remote_code=True`, also when this pipeline was itself remote code.

        diffusers' `save_pretrained` copies no code and records custom classes as plain names or
        as dynamic module paths; this copies the pipeline's and the UNet's source files verbatim, with
        the files they import relatively, and records both as `[module, class]` pairs in
        `model_index.json`. With `push_to_hub=True` the folder is uploaded only once complete (the
        parent would upload before these fixes).
        """
        hub_kwargs = {
            key: kwargs.pop(key)
            for key in ("repo_id", "commit_message", "private", "create_pr", "token")
            if key in kwargs
        }
        super().save_pretrained(save_directory, **kwargs)
        index_updates = self._save_text_components_for_transformers_4_and_5(save_directory, **kwargs)
        # torch.compile wraps a module (OptimizedModule): record and copy the model itself
        components = {name: getattr(obj, "_orig_mod", obj) for name, obj in self.components.items()}
        custom = [("_class_name", self, save_directory)] + [  # the UNet, and any other component not from a library
            (name, obj, os.path.join(save_directory, name))
            for name, obj in components.items()
            if obj is not None and type(obj).__module__.split(".")[0] not in ("diffusers", "transformers")
        ]
        for name, obj, target_dir in custom:
            source = inspect.getsourcefile(type(obj))
            module = os.path.splitext(os.path.basename(source))[0]
            # with the files it imports relatively (this one, for the pipeline), which diffusers copies along
            for code_file in [source] + get_relative_import_files(source):
                shutil.copyfile(code_file, os.path.join(target_dir, os.path.basename(code_file)))
            index_updates[name] = [module, type(obj).__name__]
        _update_json(os.path.join(save_directory, "model_index.json"), lambda index: index.update(index_updates))
        if push_to_hub:
            self.push_folder(str(save_directory), **hub_kwargs)

    @staticmethod
    def push_folder(folder, repo_id=None, commit_message=None, private=None, create_pr=False, token=None):
        """Uploads a saved folder as it is (the project's one Hub uploader; `save_pretrained(push_to_hub=True)` uses it)."""
        from huggingface_hub import create_repo, upload_folder

        repo_id = repo_id or os.path.basename(os.path.normpath(folder))
        repo_id = create_repo(repo_id, exist_ok=True, private=private, token=token).repo_id
        if not os.path.isfile(os.path.join(folder, "README.md")):  # as the parent: a card if the folder has none
            card = populate_model_card(load_or_create_model_card(repo_id, token=token, is_pipeline=True))
            card.save(os.path.join(folder, "README.md"))
        return upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            token=token,
            create_pr=create_pr,
            commit_message=commit_message or "Upload pipeline",
        )

    def _save_text_components_for_transformers_4_and_5(self, save_directory, **kwargs) -> dict:
        """Rewrites what transformers 5 saves into forms that transformers 4.x and 5.x both load the same.

        Returns the entries `model_index.json` needs changed (the caller writes that file once).

        transformers 5 saves a `CLIPTextModel` without the ``text_model.`` key prefix (4.x then loads
        every weight randomly initialised, with a mere warning) and names tokenizers by classes 4.x
        lacks (`TokenizersBackend`, a fast `CLIPTokenizer`). 5.x reads the prefixed keys and the
        4.x names too. The text encoder's config also records float32, the dtype a plain load
        gives the UNet, so that a plain load gives one dtype throughout (5.x would otherwise
        load the text encoder in its saved dtype, 4.x and diffusers in float32).
        """
        import transformers

        encoder_dir = os.path.join(save_directory, "text_encoder")
        if isinstance(self.text_encoder, transformers.CLIPTextModel):
            state_dict = self.text_encoder.state_dict()
            if not all(key.startswith("text_model.") for key in state_dict):
                state_dict = {
                    key if key.startswith("text_model.") else "text_model." + key: value
                    for key, value in state_dict.items()
                }
                self.text_encoder.save_pretrained(
                    encoder_dir,
                    state_dict=state_dict,
                    safe_serialization=kwargs.get("safe_serialization", True),
                    variant=kwargs.get("variant"),
                )
        if self.text_encoder is not None and os.path.isfile(os.path.join(encoder_dir, "config.json")):
            _update_json(
                os.path.join(encoder_dir, "config.json"),
                lambda config: config.update({key: "float32" for key in ("dtype", "torch_dtype") if key in config}),
            )

        index_updates = {}
        name = type(self.tokenizer).__name__
        if hasattr(transformers, "TokenizersBackend") and isinstance(self.tokenizer, transformers.TokenizersBackend):
            # 4.x's PreTrainedTokenizerFast and its *Fast classes read the same tokenizer.json
            name = "PreTrainedTokenizerFast" if name == "TokenizersBackend" else name
            name = name + "Fast" if not name.endswith("Fast") and hasattr(transformers, name + "Fast") else name
            index_updates["tokenizer"] = ["transformers", name]
            _update_json(
                os.path.join(save_directory, "tokenizer", "tokenizer_config.json"),
                lambda config: config.update(tokenizer_class=name),
            )
        tokenizer_config = os.path.join(save_directory, "tokenizer", "tokenizer_config.json")
        if os.path.isfile(tokenizer_config):  # options of the load that made the tokenizer, not of the tokenizer
            _update_json(
                tokenizer_config, lambda config: [config.pop(key, None) for key in ("is_local", "local_files_only")]
            )
        return index_updates
