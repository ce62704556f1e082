"""Package the project for Kaggle's offline notebook, rehearse that notebook locally, and push it.

    python -m submission.kaggle build OUT_DIR --checkpoint EXPORT_DIR [--user NAME] [--competition SLUG]
        [--preset NAME] [--push]
    python -m submission.kaggle rehearse OUT_DIR --challenges FILE [--solutions FILE] [--time-limit SECONDS]
    python -m submission.kaggle push OUT_DIR [--user NAME] [--competition SLUG]

``layout`` names the four folders of a build and what the modules share; ``build`` writes them
(``wheelhouse`` the wheels for every Python of Kaggle's image, ``notebook`` the notebook and its
metadata); ``rehearse`` runs the notebook locally as Kaggle would; ``push`` uploads the build, runs
the notebook on Kaggle, checks its output and prints the command that submits it.
"""
