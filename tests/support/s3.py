from __future__ import annotations

import pandas as pd


def sorted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["video_id", "shot_id"]).reset_index(drop=True)
