"""What a model file is and promises, torch-free: the input contract and convention, the artifact
kinds and their readers, the engine sidecar, the parity rules, the ONNX graph helpers, the device
vocabulary and the size limits on untrusted files. Edge installs import only this layer, ``io``
and ``evaluation``'s torch-free modules."""
