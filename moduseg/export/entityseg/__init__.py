"""EntitySeg (Mask2Former entity model) in plain PyTorch, exportable to ONNX and TensorRT.

``model.EntitySegModel`` is the network (Swin / HorNet / ResNet backbone,
MSDeformAttn pixel decoder with ``grid_sample``, masked-attention decoder);
``checkpoint.load_model`` loads public detectron2 checkpoints;
``export.export_onnx`` writes the fixed-size graph that
``moduseg.runtime.proposers.entityseg.EntitySegProposer`` runs without torch.
torch is imported by these modules, so import them only when exporting.
"""
