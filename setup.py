"""rlzoo: IMPALA with exploration bonuses for NetHack, MiniHack and Procgen."""
from pathlib import Path

from setuptools import find_packages, setup

# Loose ranges here; requirements.lock pins the exact set that is known to work together.
INSTALL_REQUIRES = [
    "torch>=2.13,<2.14",
    "numpy>=1.26,<2",
    "ray[default]>=2.60,<3",
    "nle==1.3.0",
    "minihack==1.0.2",
    "minigrid>=3.2,<4",
    "setuptools<81",  # minihack imports pkg_resources
    "procgen2==0.10.7",
    "hydra-core>=1.3,<1.4",
    "wandb>=0.31,<1",
    "imageio>=2.38,<3",
    "cffi>=1.17,<2",  # env.fast_reset: callbacks that NLE's C code calls during a reset
    "imageio-ffmpeg>=0.3,<1",  # MP4 episode videos (GIF without it)
    "tqdm>=4.66,<5",
    "hydra-submitit-launcher==1.2.0",  # launcher=slurm
    "submitit>=1.5,<2",
    "rliable==1.2.0",  # rlzoo-report statistics
    "arch==7.0.0",  # rliable's dependency; newer releases fail to import with numpy<2
    "pandas>=2.2,<2.3",
    "matplotlib>=3.9,<3.10",
]

setup(
    name="rlzoo",
    version="0.1.0",
    description=(Path(__file__).parent / "README.md").read_text().splitlines()[2]
    if (Path(__file__).parent / "README.md").exists()
    else "rlzoo",
    python_requires=">=3.11,<3.12",
    # hydra_plugins is a namespace package shared with other Hydra plugins: only our part is shipped.
    packages=find_packages(include=["rlzoo", "rlzoo.*"]) + ["hydra_plugins.rlzoo_launcher"],
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": ["pytest>=9"]},
    entry_points={
        "console_scripts": [
            "rlzoo-train=rlzoo.train:main",
            "rlzoo-evaluate=rlzoo.evaluate:main",
            "rlzoo-report=rlzoo.reports.cli:main",
            "rlzoo-motif=rlzoo.motif.cli:main",
        ]
    },
)
