"""Catalog family: models.list, commands.list, system.info."""

from __future__ import annotations

import os
import platform
import socket
import sys

from krabfast.methods.chat import SLASH_COMMANDS  # what chat.send understands
from krabfast.protocol import chat as C
from krabfast.protocol.methods import MethodTable
from krabfast.protocol.scopes import READ

table = MethodTable()



@table.method("models.list", C.ModelsListParams, C.ModelsListResult, READ,
              summary="the models this gateway can run (the offline model when none is configured)")
def models_list(call, params):
    catalog = call.services.conversations.models
    details = params.include_details is True
    out = {"models": [m.as_dict(details=details) for m in catalog.list()]}
    if params.view == "configured":  # krabfast picks no utility model of its own
        out["defaultModels"] = {"automaticUtilityModel": None}
    return out


@table.method("commands.list", C.CommandsListParams, C.CommandsListResult, READ,
              summary="the slash commands chat.send understands")
def commands_list(call, params):
    return {"commands": [{"name": name, "description": text, "source": "native",
                          "scope": "text", "acceptsArgs": False, "category": "session",
                          "textAliases": [f"/{name}"]} for name, text in SLASH_COMMANDS.items()]}


@table.method("system.info", C.SystemInfoParams, C.SystemInfoResult, READ,
              summary="the gateway host: name, platform, port, pid, uptime")
def system_info(call, params):
    services = call.services
    total, free = _memory()
    uname = platform.uname()
    return {"machineName": uname.node, "hostname": socket.gethostname(),
            "platform": sys.platform, "release": uname.release, "arch": uname.machine,
            "osLabel": f"{uname.system} {uname.release}".strip(),
            # The reference reports its Node version; krabfast its Python's.
            "nodeVersion": f"python {platform.python_version()}", "pid": os.getpid(),
            "uptimeMs": services.uptime_ms(), "cpuCount": os.cpu_count() or 1,
            "memoryTotalBytes": total, "memoryFreeBytes": free, "port": services.config.port,
            "loadAverage": list(os.getloadavg()) if hasattr(os, "getloadavg") else [0.0] * 3}


def _memory() -> tuple[int, int]:
    """(total, available) bytes, from /proc/meminfo where there is one."""
    try:
        fields = {}
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                fields[name] = int(rest.split()[0]) * 1024
        return fields.get("MemTotal", 0), fields.get("MemAvailable", fields.get("MemFree", 0))
    except (OSError, ValueError, IndexError):
        return 0, 0
