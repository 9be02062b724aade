using System.Net;
using System.Net.Sockets;
using System.Text.Json.Nodes;
using Potluck.Node.Cli;

namespace Potluck.Node.Tests;

/// <summary>
/// A real `potluck run` provider SIGKILLed in the middle of a lease and restarted on the same data directory and port:
/// the requester's task completes, and both ledgers agree that it was paid exactly once.
/// </summary>
[CancelAfter(300_000)]
public class KillProcessTests
{
    private string _root = "";

    [SetUp]
    public void SetUp() => _root = Path.Combine(Path.GetTempPath(), "potluck-kill-" + Guid.NewGuid().ToString("N"));

    [TearDown]
    public void TearDown() => ProcessTests.DeleteDir(_root);

    private static async Task<(int Code, JsonObject? Json, string Error)> CliAsync(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = await Commands.RunAsync([.. args, "--json"], stdout, stderr);
        return (code, code == 0 ? JsonNode.Parse(stdout.ToString())!.AsObject() : null, stderr.ToString());
    }

    private static int FreePort()
    {
        using var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        return ((IPEndPoint)probe.LocalEndpoint).Port;
    }

    private static PotluckProcess StartProvider(int port, string dataDir) =>
        PotluckProcess.Start("run", "--listen", $"/ip4/127.0.0.1/tcp/{port}", "--no-mdns", "--cores", "1", "--data-dir", dataDir);

    [Test]
    public async Task Provider_KilledMidLease_AndRestartedOnItsDataDir_TheTaskCompletes_PaidOnce_BothLedgersAgree(CancellationToken ct)
    {
        Directory.CreateDirectory(_root);
        var providerDir = Path.Combine(_root, "provider");
        var requesterDir = Path.Combine(_root, "requester");
        var seed = Path.Combine(_root, "seed.txt");
        await File.WriteAllTextAsync(seed, "kill -9", ct);
        var module = Path.Combine(Potluck.Tests.RepositoryRoot.FullPath, "samples", "hashchain", "hashchain.wasm");
        const int Rounds = 1_200_000; // about 0.5 s of one quiet core (under 2e10 fuel): long enough to be killed in the middle

        var port = FreePort();
        var provider = StartProvider(port, providerDir);
        PotluckProcess? restarted = null;
        try
        {
            var (providerId, address) = await ProcessTests.StartedAsync(provider, ct);
            await using var submit = PotluckProcess.Start("submit", module, "--input", seed, "--bootstrap", address, "--no-mdns",
                "--data-dir", requesterDir, "--fuel", "20000000000", "--replicas", "1", "--", Rounds.ToString(System.Globalization.CultureInfo.InvariantCulture));

            // The task runs on the provider: kill -9 it there and then.
            await provider.WaitForLineAsync(l => l.StartsWith("Task started for ", StringComparison.Ordinal), ct);
            await provider.KillAsync(ct);
            Assert.That(provider.HasExitedBySignal, Is.True);

            // Restart on the same data directory and port: the same identity, and the requester redials it.
            restarted = StartProvider(port, providerDir);
            var (againId, _) = await ProcessTests.StartedAsync(restarted, ct);
            Assert.That(againId, Is.EqualTo(providerId), "the identity survives the kill");
            await restarted.WaitForLineAsync(l => l.StartsWith("Task started for ", StringComparison.Ordinal), ct);

            var (code, output) = await submit.WaitForExitAsync(ct);
            Assert.That(code, Is.EqualTo(0), submit.Stderr);
            Assert.That(output, Is.EqualTo(Compute.ComputeCluster.HashChain("kill -9"u8.ToArray(), Rounds)));

            // Both ledgers, the provider's read through its running daemon (it acknowledged the receipt before submit
            // exited).
            var spentBy = await CliAsync("ledger", "--data-dir", requesterDir, "--count", "100");
            Assert.That(spentBy.Code, Is.EqualTo(0), spentBy.Error);
            var earnedBy = (await CliAsync("ledger", "--data-dir", providerDir, "--count", "100")).Json!;
            var spent = spentBy.Json!["entries"]!.AsArray().Where(e => e!["kind"]!.GetValue<string>() == "spent").ToList();
            var earned = earnedBy["entries"]!.AsArray().Where(e => e!["kind"]!.GetValue<string>() == "earned").ToList();
            // A task this long is paid as it goes (debit notes, one payment per 2^30 fuel, then the final receipt for the
            // rest): each payment is recorded once on each side, and only one run, the one that completed, got a final
            // receipt (the killed run's lease got none; the slices it finished before the kill, if any, were work done).
            var paid = spent.Select(e => -e!["amount"]!.GetValue<long>()).Order().ToList();
            var got = earned.Select(e => e!["amount"]!.GetValue<long>()).Order().ToList();
            var slice = paid.Max(); // slices differ by at most one micro-credit of rounding
            Assert.Multiple(() =>
            {
                Assert.That(spent, Has.Count.GreaterThanOrEqualTo(1));
                Assert.That(got, Is.EqualTo(paid), "every payment recorded once on each side, none counted twice");
                Assert.That(paid.Count == 1 || paid.Count(a => a < slice - 1) == 1, Is.True,
                    $"one final receipt (the run that completed), the rest whole slices: {string.Join(", ", paid)}");
                Assert.That(spent.Select(e => e!["counterparty"]!.GetValue<string>()).Distinct(), Is.EqualTo(new[] { providerId }));
                Assert.That(earned.Select(e => e!["counterparty"]!.GetValue<string>()).Distinct(),
                    Is.EqualTo(new[] { spentBy.Json["peer_id"]!.GetValue<string>() }));
                Assert.That(paid.Sum(), Is.GreaterThan(0));
                Assert.That(spentBy.Json["balance"]!.GetValue<long>() + earnedBy["balance"]!.GetValue<long>(), Is.EqualTo(0),
                    "no credit lost or made: the two balances cancel out");
            });
            var audit = await CliAsync("ledger", "--data-dir", providerDir, "--verify");
            Assert.That(audit.Code, Is.EqualTo(0), audit.Error);
        }
        finally
        {
            await provider.DisposeAsync();
            if (restarted is not null)
            {
                await restarted.DisposeAsync();
            }
        }
    }
}
