using Potluck.Protocol.Host;
using Potluck.Protocol.Identity;

namespace Potluck.Node.Cli;

/// <summary>What `potluck run` prints on stdout: the peer id, listen addresses and settings, then each new peer connection.</summary>
internal sealed class NodePrinter : IDisposable
{
    private readonly PotluckNode _node;
    private readonly TextWriter _stdout;
    private readonly string _controlSocket;
    private readonly HashSet<long> _printed = [];

    public NodePrinter(PotluckNode node, TextWriter stdout, string controlSocket)
    {
        _node = node;
        _stdout = TextWriter.Synchronized(stdout);
        _controlSocket = controlSocket;
    }

    public async Task PrintHeaderAsync()
    {
        var options = _node.Options;
        await _stdout.WriteLineAsync($"Peer id: {_node.PeerId}");
        if (_node.Services.GetService(typeof(Hosting.NodeSwarmKey)) is Hosting.NodeSwarmKey { Key: { } key })
        {
            await _stdout.WriteLineAsync($"Private network: {key.Fingerprint}");
        }
        foreach (var address in _node.FullAddresses)
        {
            await _stdout.WriteLineAsync($"Listening on {address}");
        }
        await _stdout.WriteLineAsync($"Discovery: mDNS {(_node.Mdns is not null ? "on" : "off")}, {options.Bootstrap.Count} bootstrap peers");
        await _stdout.WriteLineAsync($"Control API: {_controlSocket} (token in control.token; try potluck status)");
        if (_node.Compute?.Provider is not null)
        {
            var offer = options.Compute.Provider;
            await _stdout.WriteLineAsync($"Providing: {offer.Cores} core{(offer.Cores == 1 ? "" : "s")} at {offer.PricePerMegaFuel} micro-credits per million fuel (--no-provide to stop)");
        }
        else if (_node.Compute is not null)
        {
            await _stdout.WriteLineAsync("Providing: off");
        }
        await _stdout.WriteLineAsync("Press Ctrl+C to stop.");
        await _stdout.FlushAsync();

        // Bootstrap dials and mDNS started with the node, so connections may already be open: after the header,
        // subscribe, then replay those (each connection is printed once, whichever path reports it first).
        _node.Host.Connected += OnConnected;
        _node.Host.Disconnected += OnDisconnected;
        if (_node.Compute?.Provider is { } provider)
        {
            provider.ExecutionStarted += OnExecutionStarted;
        }
        foreach (var connection in _node.Host.Connections)
        {
            OnConnected(connection);
        }
    }

    private void OnConnected(IConnection connection)
    {
        lock (_printed)
        {
            if (!_printed.Add(connection.Id))
            {
                return;
            }
        }
        _stdout.WriteLine($"Connected to {connection.RemotePeer} ({(connection.Direction == Direction.Inbound ? "inbound" : "outbound")} {connection.RemoteAddress})");
        _stdout.Flush();
    }

    private void OnExecutionStarted(PeerId requester, ulong lease)
    {
        _stdout.WriteLine($"Task started for {requester} (lease {lease})");
        _stdout.Flush();
    }

    private void OnDisconnected(IConnection connection)
    {
        lock (_printed)
        {
            _printed.Remove(connection.Id);
        }
    }

    public void Dispose()
    {
        _node.Host.Connected -= OnConnected;
        _node.Host.Disconnected -= OnDisconnected;
        if (_node.Compute?.Provider is { } provider)
        {
            provider.ExecutionStarted -= OnExecutionStarted;
        }
    }
}
