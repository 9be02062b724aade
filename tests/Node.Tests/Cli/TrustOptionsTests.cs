using Potluck.Node.Cli;
using Potluck.Node.Hosting;
using Potluck.Scheduler.Accounting;
using Potluck.Scheduler.Credits;

namespace Potluck.Node.Tests.Cli;

/// <summary>Range checks of <c>compute:accounting:*</c> and <c>compute:credits:holdback</c>, each message naming its key.</summary>
public class TrustOptionsTests
{
    private static IReadOnlyList<string> Problems(AccountingOptions? accounting = null, CreditsOptions? credits = null) =>
        PotluckOptionsValidator.Validate(new PotluckOptions
        {
            Compute = new ComputeOptions { Accounting = accounting ?? new AccountingOptions(), Credits = credits ?? new CreditsOptions() },
        });

    [Test]
    public void Defaults_AreValid_AndHoldbackIsOneHour()
    {
        Assert.That(Problems(), Is.Empty);
        Assert.That(new CreditsOptions().Holdback, Is.EqualTo(TimeSpan.FromHours(1)));
        Assert.That(Problems(credits: new CreditsOptions { Holdback = TimeSpan.Zero }), Is.Empty, "0 turns holding back off");
        Assert.That(Problems(credits: new CreditsOptions { Holdback = TimeSpan.FromDays(30) }), Is.Empty);
    }

    [Test]
    public void Holdback_NegativeOrOverThirtyDays_IsRefusedWithItsKey()
    {
        Assert.That(Problems(credits: new CreditsOptions { Holdback = TimeSpan.FromSeconds(-1) }),
            Has.Some.StartsWith("'compute:credits:holdback' is -00:00:01; it must be from 00:00:00 (off) to 30.00:00:00"));
        Assert.That(Problems(credits: new CreditsOptions { Holdback = TimeSpan.FromDays(31) }),
            Has.Some.StartsWith("'compute:credits:holdback' is 31.00:00:00"));
    }

    [TestCase("exchangeTimeout", "'compute:accounting:exchangeTimeout' is 00:00:00; it must be a positive duration")]
    [TestCase("retryInterval", "'compute:accounting:retryInterval' is 00:00:00; it must be from 00:00:01 to 1.00:00:00")]
    [TestCase("proposeDelay", "'compute:accounting:proposeDelay' is -00:00:01; it must be from 00:00:00 to 00:01:00")]
    [TestCase("maxRetriesPerRound", "'compute:accounting:maxRetriesPerRound' is 0; it must be from 1 to 100000")]
    [TestCase("maxBlockBytes", "'compute:accounting:chain:maxBlockBytes' is 100; it must be from 512 to 65536")]
    [TestCase("maxPayloadBytes", "'compute:accounting:chain:maxPayloadBytes' is 8192; it must be from 256 to 'compute:accounting:chain:maxBlockBytes' (7168)")]
    public void Accounting_OutOfRange_IsRefusedWithItsKey(string field, string expected)
    {
        var a = new AccountingOptions();
        a = field switch
        {
            "exchangeTimeout" => a with { ExchangeTimeout = TimeSpan.Zero },
            "retryInterval" => a with { RetryInterval = TimeSpan.Zero },
            "proposeDelay" => a with { ProposeDelay = TimeSpan.FromSeconds(-1) },
            "maxRetriesPerRound" => a with { MaxRetriesPerRound = 0 },
            "maxBlockBytes" => a with { Chain = a.Chain with { MaxBlockBytes = 100, MaxPayloadBytes = 100 } },
            _ => a with { Chain = a.Chain with { MaxPayloadBytes = 8192 } },
        };
        var problems = Problems(accounting: a);
        Assert.That(problems, Has.Some.StartsWith(expected));
        Assert.That(problems, Has.Count.EqualTo(field == "maxBlockBytes" ? 2 : 1), string.Join("\n", problems));
    }

    [TestCase("{\"compute\": {\"credits\": {\"holdback\": \"-01:00:00\"}}}", "'compute:credits:holdback' is -01:00:00")]
    [TestCase("{\"compute\": {\"accounting\": {\"retryInterval\": \"00:00:00\"}}}", "'compute:accounting:retryInterval' is 00:00:00")]
    [TestCase("{\"compute\": {\"accounting\": {\"chain\": {\"maxBlockBytes\": 64}}}}", "'compute:accounting:chain:maxBlockBytes' is 64")]
    public void BadTrustSettingsInTheConfigFile_AreRefusedAtStart(string json, string expected)
    {
        var dir = Directory.CreateTempSubdirectory("potluck-trust-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(dir, NodeConfiguration.FileName), json);
            var parsed = Commands.Parse(["run", "--data-dir", dir]);
            Assert.That(parsed.Errors.Select(e => e.Message), Is.Empty);
            var e = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(() => RunCommand.ResolveRunOptions(parsed))!;
            Assert.That(e.Failures, Has.Some.Contains(expected));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
