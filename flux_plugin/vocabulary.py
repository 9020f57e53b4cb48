"""The Flux-side vocabulary, written once: service and topics, the event, the variable names.

The two C plugins in jobtap/ spell the same words as ``#define`` constants (C cannot import
this); ``tests/test_layout.py`` reads their ``#define`` lines and checks each against the name
here that ``C_DEFINES`` pairs it with, so a word can change only in both places at once.
"""

SERVICE = "copy-offload"  # the broker service the Python side registers
TOPIC_PREPARE = SERVICE + ".prepare"  # jobtap -> service at job.state.run: {id, userid, dw?}
TOPIC_FORGET = SERVICE + ".forget"  # jobtap -> service when the job is inactive: {id}, no reply
TOPIC_STATS = SERVICE + ".stats"  # flux copy-offload status: {} -> the service's counters
TOPIC_ENV = SERVICE + ".env"  # flux copy-offload env: {id} -> the variables, token redacted

JOBTAP_PLUGIN = "copy-offload"  # the jobtap plugin's name (copy-offload.so)
SHELL_PLUGIN = "copy-offload-env"  # the job-shell plugin's name (copy-offload-env.so)
PROLOG = "copy-offload"  # the prolog action the jobtap plugin holds a job in
EXCEPTION_TYPE = "copy-offload"  # the type of the fatal exception a failed prepare raises
ENV_EVENT = "copy-offload-env"  # the job event carrying the variables to the job shells
SHELL_OPTION = "copy-offload"  # the jobspec shell option table ({timeout = seconds})
DIRECTIVE_WORD = "copy-offload"  # requires=copy-offload in a #DW directive

VARIABLES = "variables"  # the key of the prepare reply and of the event: {"variables": {NAME: value}}
TOKEN_VAR = "DW_WORKFLOW_TOKEN"
NAME_VAR = "DW_WORKFLOW_NAME"
NAMESPACE_VAR = "DW_WORKFLOW_NAMESPACE"

# Which C #define (by file) spells which word above.
C_DEFINES = {
    "copy-offload.c": {
        "PLUGIN_NAME": JOBTAP_PLUGIN, "PROLOG_NAME": PROLOG, "ENV_EVENT": ENV_EVENT,
        "EXCEPTION_TYPE": EXCEPTION_TYPE, "PREPARE_TOPIC": TOPIC_PREPARE, "FORGET_TOPIC": TOPIC_FORGET,
        "VARIABLES_KEY": VARIABLES, "DIRECTIVE_WORD": DIRECTIVE_WORD,
    },
    "copy-offload-env.c": {
        "FLUX_SHELL_PLUGIN_NAME": SHELL_PLUGIN, "ENV_EVENT": ENV_EVENT, "PROLOG_NAME": PROLOG,
        "VARIABLES_KEY": VARIABLES, "SHELL_OPTION": SHELL_OPTION,
    },
}
