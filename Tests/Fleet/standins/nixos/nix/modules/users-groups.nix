# The users and groups NixOS itself defines and checks: the `keys` group agents join,
# and NixOS's assertions that each user is either a system or a normal user and has a
# group. It does not define root or the other NixOS system users (Debian has them).
{ config, lib, ... }:
{
  users.groups.keys = { };

  assertions = lib.concatLists (lib.mapAttrsToList (_: user: [
    {
      assertion = user.isSystemUser != user.isNormalUser;
      message = "Exactly one of users.users.${user.name}.isSystemUser and "
        + "users.users.${user.name}.isNormalUser must be set.";
    }
    {
      assertion = user.isNormalUser || user.group != "";
      message = "users.users.${user.name}.group is unset. This used to default to\n"
        + "nogroup, but this is unsafe. For example you can create a group\n"
        + "for this user with:\n"
        + "users.users.${user.name}.group = \"${user.name}\";\n"
        + "users.groups.${user.name} = {};";
    }
  ]) config.users.users);
}
