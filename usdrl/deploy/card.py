"""The model card (README.md) of a model bundle, written from its model.json."""

from __future__ import annotations

from typing import Any


def _metrics_lines(heads: dict[str, Any]) -> list[str]:
    lines = []
    classifier = heads.get("classifier")
    if classifier:
        metrics = classifier["metrics"]
        provenance = classifier["provenance"]
        lines.append(f"- classifier (linear probe, {classifier['classes']} classes): top-1 "
                     f"{100 * metrics['top1']:.2f} %, top-5 {100 * metrics.get('top5', float('nan')):.2f} % on "
                     f"{provenance.get('dataset')} {provenance.get('benchmark')} test "
                     f"({provenance.get('samples', {}).get('test')} clips), headline after the last epoch")
    detector = heads.get("detector")
    if detector:
        at = detector["metrics"]["by_overlap"].get("0.5", {})
        provenance = detector["provenance"]
        lines.append(f"- detector ({len(detector['class_names'])} actions + background): mAP_a@0.5 "
                     f"{100 * at.get('mAP_a', float('nan')):.2f} %, mAP_v@0.5 {100 * at.get('mAP_v', float('nan')):.2f}"
                     f" % (official PKU-MMD definition) on {provenance.get('dataset')} {provenance.get('benchmark')} "
                     f"test, proposal rule {detector['settings'].get('proposal_rule')}")
    return lines or ["- none: an encoder only (embeddings)"]


def _provenance_lines(description: dict[str, Any]) -> list[str]:
    source = description["source"]
    training = description["preprocessing"]["training_data"]
    lines = [f"- checkpoint: `{source['checkpoint']}` ({source['kind']}), sha256 `{source['checkpoint_sha256']}`"
             + (f", epoch {source['epoch']}" if source.get("epoch") is not None else ""),
             f"- training data: {training['dataset']}"
             + (f", manifest sha256 `{training['manifest_sha256']}`" if training.get("manifest_sha256") else "")]
    for name, head in description["heads"].items():
        provenance = head["provenance"]
        lines.append(f"- {name}: `{head['results_file']}`, data manifest sha256 "
                     f"`{provenance.get('data_manifest_sha256')}`, git revision {provenance.get('git_revision')}")
    lines.append(f"- exported with usdrl {description['usdrl_version']}, git revision "
                 f"{description['exported']['git_revision']}, torch {description['exported']['torch']}")
    return lines


def render_card(description: dict[str, Any]) -> str:
    """The bundle's model card (README.md, Markdown) from its model.json description."""
    encoder, layout, preprocessing = description["encoder"], description["layout"], description["preprocessing"]
    classes = description.get("class_names")
    training = preprocessing["training_data"]
    lines = [
        f"# USDRL {encoder['backbone'].upper()} ({description['modality']}) skeleton model",
        "",
        f"A self-supervised USDRL encoder (AAAI 2025) trained on {training['dataset']}, exported by `usdrl export`. "
        "It maps a skeleton clip to a clip feature (2H) and per-frame features (H)"
        + (", and recognises actions" if "classifier" in description["heads"] else "")
        + (", and detects actions in long streams" if "detector" in description["heads"] else "") + ".",
        "",
        "## Use",
        "```",
        "usdrl embed --model THIS_FOLDER clips.npz --out features.npz      # (N, 2H); --dense adds (N, T, H)",
        "usdrl recognize --model THIS_FOLDER video.skeleton --top-k 5     # JSON lines",
        "usdrl detect run --model THIS_FOLDER stream.txt --out detections/",
        "```",
        "In Python: `model = usdrl.load_model('THIS_FOLDER'); model.recognize('video.skeleton', top_k=5)`.",
        "Inputs: a prepared dataset folder, a .npz (x (N, C, T, V, M)), an NTU .skeleton, a PKU-MMD .txt, or "
        "COCO-17 keypoints JSON; pass raw coordinates, the preprocessing below is applied for you.",
        "",
        "## Model",
        f"- backbone {encoder['backbone']}, hidden size H = {encoder['hidden_size']}, {encoder['num_layers']} layers, "
        f"{encoder['num_heads']} head(s), alpha {encoder['alpha']}, {description['parameters']:,} encoder parameters",
        f"- input modality: {description['modality']}; clip length T = {encoder['clip_frames']} frames",
        f"- layout {layout['name']}: {len(layout['joint_names'])} joints, {layout['num_persons']} person(s), "
        f"{layout['num_coordinates']} coordinates; centre joint {layout['center_joint']}, shoulders "
        f"{layout['shoulder_pair'][0]} -> {layout['shoulder_pair'][1]} (1-based)",
        f"- classes ({len(classes)}): {', '.join(classes)}" if classes else "- classes: none (no classifier)",
        "",
        "## Preprocessing (applied by load_model / the commands)",
        *[f"- {step}" for step in preprocessing["steps"]],
        f"- longer clips than {preprocessing['max_frames']} frames: {preprocessing['longer_sequences']}"
        if preprocessing.get("max_frames") else "- clip length: not limited",
        f"- encoder input: {preprocessing['downstream_input']}",
        f"- persons: {preprocessing['person_selection']}",
        f"- streams: {preprocessing['streams']}",
        "",
        "## Results it was exported with",
        *_metrics_lines(description["heads"]),
        "",
        "## Provenance",
        *_provenance_lines(description),
        "",
        "## Files",
        "Weights are safetensors (no pickle). `model.json` lists the sha256 of every file and of itself; "
        "`usdrl.load_model` refuses a bundle whose files changed.",
        "",
        "## Limitations",
        f"- The model knows the skeletons it was trained on ({training['dataset']}, layout {layout['name']}); other "
        "sensors, layouts or camera set-ups need a model trained on them (a different layout is refused).",
        "- A model trained on the synthetic demo data is a pipeline check, not a model of human actions.",
        "",
    ]
    return "\n".join(lines)
