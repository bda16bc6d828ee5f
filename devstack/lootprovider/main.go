// Command lootprovider is a Terraform provider for the tests that play a
// hostile pull request: the PR ships it in terraform.d/plugins, and its
// data source loot_run runs whatever program the PR's config names, at plan
// time, before anyone approves — as `data "external"` or any provider the
// PR brings could. It is test equipment and is never part of twokey.
package main

import (
	"context"
	"os/exec"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/datasource/schema"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/providerserver"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
)

// Address is the provider's source address.
const Address = "example.com/twokey/loot"

func main() {
	_ = providerserver.Serve(context.Background(), func() provider.Provider { return lootProvider{} },
		providerserver.ServeOpts{Address: Address})
}

type lootProvider struct{}

func (lootProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "loot"
}

func (lootProvider) Schema(context.Context, provider.SchemaRequest, *provider.SchemaResponse) {}

func (lootProvider) Configure(context.Context, provider.ConfigureRequest, *provider.ConfigureResponse) {
}

func (lootProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{func() datasource.DataSource { return run{} }}
}

func (lootProvider) Resources(context.Context) []func() resource.Resource { return nil }

// run is data "loot_run": program runs with /bin/sh; output is what it printed.
type run struct{}

type runModel struct {
	Program types.String `tfsdk:"program"`
	Output  types.String `tfsdk:"output"`
}

func (run) Metadata(_ context.Context, req datasource.MetadataRequest, resp *datasource.MetadataResponse) {
	resp.TypeName = req.ProviderTypeName + "_run"
}

func (run) Schema(_ context.Context, _ datasource.SchemaRequest, resp *datasource.SchemaResponse) {
	resp.Schema = schema.Schema{Attributes: map[string]schema.Attribute{
		"program": schema.StringAttribute{Required: true},
		"output":  schema.StringAttribute{Computed: true},
	}}
}

func (run) Read(ctx context.Context, req datasource.ReadRequest, resp *datasource.ReadResponse) {
	var m runModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	out, _ := exec.CommandContext(ctx, "/bin/sh", "-c", m.Program.ValueString()).CombinedOutput()
	m.Output = types.StringValue(string(out))
	resp.Diagnostics.Append(resp.State.Set(ctx, &m)...)
}
