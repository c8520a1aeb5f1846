"""The service user the server role creates: the instance's own user lives in the app root, a user named in
gunicorn_user may run several instances and names none of them (roles/server/vars/main.yml), so that each instance's
run leaves it as the other left it. Rendered with Ansible's templar from the role's own vars file."""

from pathlib import Path

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

try:
    from ansible.template import trust_as_template
except ImportError:  # ansible-core before 2.19 templates any string

    def trust_as_template(value):
        return value


REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "server"


def user_fields(instance: str, user: str | None = None) -> tuple[str, str]:
    variables = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    variables.update(yaml.safe_load((ROLE / "vars" / "main.yml").read_text()))
    variables["gunicorn_instance"] = instance
    if user is not None:
        variables["gunicorn_user"] = user
    # As the role's own files they are trusted templates, which strings read with PyYAML are not.
    variables = {name: trust_as_template(v) if isinstance(v, str) else v for name, v in variables.items()}
    templar = Templar(loader=DataLoader(), variables=variables)
    fields = trust_as_template("{{ __gunicorn_user_home }}"), trust_as_template("{{ __gunicorn_user_comment }}")
    return tuple(templar.template(field) for field in fields)


def test_the_instance_own_user_lives_in_the_app_root():
    assert user_fields("api") == ("/srv/gunicorn/api", "gunicorn api")


@pytest.mark.parametrize("user", ["airflow", "gunicorn-other", "gunicorn-api2"])
def test_a_named_user_is_the_same_for_every_instance(user):
    fields = {user_fields(instance, user) for instance in ("airflow-core", "airflow-execution", "api")}
    assert fields == {("/srv/gunicorn", "gunicorn service user")}
