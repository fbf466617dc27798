"""The example photos the shipped workflows load reach ComfyUI's input folder at start, and a user's file of
the same name is never replaced: checked on a real server, and on a folder directly."""
from __future__ import annotations

import json

from devtools.comfy_env import PACK_ROOT
from infusenet.examples import PHOTOS_DIR, copy_missing_photos, example_photos
from tests.conftest import USERS_OWN, USERS_PHOTO
from tests.host_features import newest_host_only


def workflow_photos() -> set[str]:
    """Every file a LoadImage node of a shipped workflow names."""
    names = set()
    for path in (PACK_ROOT / "workflows").glob("*.json"):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] == "LoadImage":
                names.add(node["widgets_values"][0])
    return names


def test_the_server_lists_every_example_photo_for_load_image(bare_server):
    listed = bare_server.object_info()["LoadImage"]["input"]["required"]["image"][0]
    shipped = [p.name for p in example_photos()]
    assert len(shipped) == 6  # five photos and the self-test workflow's drawn face
    assert set(shipped) <= set(listed), sorted(set(shipped) - set(listed))


def test_a_users_file_of_the_same_name_is_left_alone(bare_server):
    folder = bare_server.base_dir / "input"
    assert (folder / USERS_PHOTO).read_bytes() == USERS_OWN
    for photo in example_photos():
        if photo.name != USERS_PHOTO:
            assert (folder / photo.name).read_bytes() == photo.read_bytes(), photo.name


@newest_host_only("reads the shipped workflow files and photos")
def test_every_photo_a_workflow_names_is_shipped():
    named = workflow_photos()
    assert "infu_selftest_face.png" in named  # the self-test's photo comes like the others, not from run.sh
    assert named <= {p.name for p in example_photos()}, sorted(named - {p.name for p in example_photos()})


@newest_host_only("copies files into a folder it is given; ComfyUI's input folder is never asked for")
def test_copying_twice_writes_nothing_the_second_time(tmp_path):
    first = copy_missing_photos(tmp_path)
    assert sorted(p.name for p in first) == sorted(p.name for p in [*PHOTOS_DIR.glob("*.jpg"), *PHOTOS_DIR.glob("*.png")])
    (tmp_path / first[0].name).write_bytes(USERS_OWN)
    assert copy_missing_photos(tmp_path) == []
    assert (tmp_path / first[0].name).read_bytes() == USERS_OWN
