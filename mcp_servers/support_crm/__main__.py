from mcp_servers._runner import parse_args, run
from mcp_servers.support_crm.server import build_server

if __name__ == "__main__":
    run(build_server(), parse_args("plugway bundled MCP server: support CRM"))
